"""oisp-ship against a real S3 server (moto's server mode, a subprocess), on segments published by the
recorder's own writer: uploaded under their node and date byte for byte, deleted locally only once
the store shows the very bytes. A store that goes down and comes back, an upload cut halfway or
altered on the way, a shipper killed mid-upload: nothing lost, nothing uploaded twice. In-progress
files are never uploaded; segments the recorder's quota deletes before their upload are counted; the
live analyzer keeps every segment it will read again."""

from __future__ import annotations

import base64
import json
import logging
import re
import signal
import subprocess
import threading
import time
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from analyzer.config import AnalyzerConfig
from analyzer.live import checkpoint
from analyzer.live.checkpoint import Checkpoint
from analyzer.live.follow import Follower, FollowOptions
from analyzer.live.metrics import FollowStats
from conftest import BIN, HASH_KEY
from contract.metrics_server import MetricsServer
from helpers.analyzer_inputs import FIXTURES
from helpers.follow_helpers import interleaved, one_shot_lines, output_lines, publish, split_segment
from helpers.moto_server import CREDENTIALS, MotoServer
from helpers.s3_fault_proxy import FaultProxy
from helpers.shipping_inputs import Recorder, batch, upload_config
from recorder.shipping.keys import object_key
from recorder.shipping.local_segment import open_segment
from recorder.shipping.metrics import ShipperMetrics
from recorder.shipping.shipper import Shipper
from recorder.shipping.transfer import mismatch
from recorder.store.writer import SegmentWriter

PREFIX = "fleet/raw"  # upload_config's
_buckets = iter(range(1_000_000))


@pytest.fixture(scope="module")
def moto():
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto) -> str:
    name = f"segments-{next(_buckets)}"
    moto.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(moto):
    p = FaultProxy(moto.port)
    yield p
    p.close()


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    """The shipper's credentials come from the environment, as the DaemonSet's Secret gives them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def segments_dir(tmp_path):
    d = tmp_path / "segments"
    d.mkdir(mode=0o700)
    return d


def stored(client, bucket: str) -> dict[str, bytes]:
    """Every object of the bucket: key -> bytes."""
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def expected_key(name: str) -> str:
    """PREFIX/node=NODE/date=YYYY-MM-DD/NAME, spelled out from the name's parts."""
    node, stamp, _run, _seq = name.removesuffix(".parquet").rsplit("-", 3)
    return f"{PREFIX}/node={node}/date={stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}/{name}"


def contents(paths) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}


def as_objects(segments: dict[str, bytes]) -> dict[str, bytes]:
    return {expected_key(name): data for name, data in segments.items()}


def local(segments_dir) -> list[str]:
    return sorted(p.name for p in segments_dir.iterdir())


def scrape(port: int) -> dict[str, float]:
    """The metrics endpoint's samples: name (counters with _total) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m.name + ("_total" if m.type == "counter" else ""): m.samples[0].value
            for m in text_string_to_metric_families(text)}


def write_config(path, segments_dir, upload: dict) -> list[str]:
    """The config file, and the command running oisp-ship on it."""
    path.write_text(yaml.safe_dump({"recorder": {"segments_dir": str(segments_dir)}, "upload": upload}))
    return [str(BIN / "oisp-ship"), "--config", str(path)]


class Running:
    """oisp-ship as the DaemonSet runs it (until SIGTERM), with its metrics on a free port: ready once
    its log names the port."""

    def __init__(self, command: list[str]):
        self.proc = subprocess.Popen([*command, "--metrics-port", "0", "--metrics-address", "127.0.0.1"],
                                     stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        for line in self.proc.stderr:
            self.log.append(line)
            if m := re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line):
                self.port = int(m.group(1))
                break
        else:
            raise AssertionError(f"oisp-ship did not start: {''.join(self.log)}")
        self._reader = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def wait_for(self, name: str, value: float, timeout: float = 30) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while (samples := scrape(self.port))[name] != value:
            assert time.monotonic() < deadline, (name, samples, "".join(self.log))
            time.sleep(0.02)  # polling the endpoint: the shipper's own progress signal
        return samples

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        return code


# ---- the happy path ----

def test_published_segments_are_uploaded_by_node_and_date_then_deleted(moto, bucket, segments_dir):
    paths = Recorder(segments_dir).publish(3, rows=50, size=20_000)  # 1 MB each, node worker-1
    fixture = next((FIXTURES / "segments" / "h2").glob("*.parquet"))  # recorded by the real recorder
    paths.append(publish(fixture, segments_dir))
    originals = contents(paths)
    assert object_key(PREFIX, fixture.stem) == (
        "fleet/raw/node=vm/date=2026-11-30/vm-20261130T104659-6617c2100ef9f-000000.parquet")

    shipper = Shipper(upload_config(moto.url, bucket), segments_dir)
    assert shipper.run_pass() == shipper.cfg.poll_seconds

    assert stored(moto.client(), bucket) == as_objects(originals)  # every key, every byte
    assert local(segments_dir) == []
    s = shipper.stats
    assert (s.segments_uploaded, s.bytes_uploaded, s.segments_deleted) == (
        4, sum(map(len, originals.values())), 4)
    assert (s.upload_failures, s.retries, s.segments_lost, s.segments_already_there) == (0, 0, 0, 0)
    # the counters on the metrics endpoint, as Prometheus scrapes them
    server = MetricsServer("127.0.0.1", 0, ShipperMetrics(shipper.stats, shipper.gauges).registry())
    try:
        samples = scrape(server.port)
    finally:
        server.close()
    assert samples["oisp_shipper_segments_uploaded_total"] == 4
    assert samples["oisp_shipper_bytes_uploaded_total"] == s.bytes_uploaded
    assert samples["oisp_shipper_pending_segments"] == 0 and samples["oisp_shipper_segments_lost_total"] == 0
    # nothing new: nothing done
    shipper.run_pass()
    assert shipper.stats.segments_uploaded == 4 and len(stored(moto.client(), bucket)) == 4


def test_only_complete_published_segments_are_uploaded(moto, bucket, segments_dir, tmp_path, caplog):
    [done] = Recorder(segments_dir).publish(1)
    # the stream the recorder is writing now, and what a conversion or a crash leaves
    live = SegmentWriter(segments_dir, "worker-1", "77aa", {}, max_bytes=1 << 40, max_seconds=3600)
    live.write(batch(99, 20, 1000))
    [in_progress] = segments_dir.glob(".*.arrows.inprogress")
    leftovers = {
        ".worker-1-20260101T000000-77aa-000003.parquet.converting": done.read_bytes(),
        "worker-1-20260101T000000-77aa-000004.corrupt": b"junk",
        # named as a published segment, but cut short: no Parquet footer
        "worker-1-20260101T000000-77aa-000005.parquet": done.read_bytes()[:done.stat().st_size // 2],
        "notes.parquet": done.read_bytes(),  # complete, but not a name the recorder gives segments
    }
    for name, data in leftovers.items():
        (segments_dir / name).write_bytes(data)
    elsewhere = tmp_path / "elsewhere.parquet"
    elsewhere.write_bytes(done.read_bytes())
    (segments_dir / "worker-1-20260101T000000-77aa-000006.parquet").symlink_to(elsewhere)
    before = set(local(segments_dir)) - {done.name}
    original = done.read_bytes()

    shipper = Shipper(upload_config(moto.url, bucket), segments_dir)
    caplog.set_level(logging.WARNING)
    shipper.run_pass()
    shipper.run_pass()  # refused files are refused once

    assert stored(moto.client(), bucket) == as_objects({done.name: original})
    assert set(local(segments_dir)) == before  # every other file left as it was
    assert shipper.stats.segments_not_shippable == 2 and shipper.stats.segments_uploaded == 1
    refused = [r.getMessage() for r in caplog.records if "is not uploaded" in r.getMessage()]
    assert len(refused) == 2 and any("not a complete Parquet file" in m for m in refused)
    skipped = [r.getMessage() for r in caplog.records if "000006.parquet" in r.getMessage()]
    assert len(skipped) == 1 and "symbolic link" in skipped[0]  # the recorder's own check says so
    # once the recorder publishes the stream, it goes
    assert live.close() is not None and not in_progress.exists()
    shipper.run_pass()
    assert shipper.stats.segments_uploaded == 2 and len(stored(moto.client(), bucket)) == 2


def test_verification_takes_the_checksums_each_kind_of_object_has(segments_dir):
    [path] = Recorder(segments_dir).publish(1)
    segment = open_segment(path)
    try:
        sha256, md5 = base64.b64encode(segment.sha256).decode(), segment.md5.hex()
        plain = {"ContentLength": segment.size, "ETag": f'"{md5}"'}
        assert mismatch(plain, segment) is None
        assert mismatch({**plain, "ChecksumSHA256": sha256}, segment) is None
        short = mismatch({**plain, "ContentLength": segment.size - 1}, segment)
        assert short == f"the object has {segment.size - 1} bytes, the segment {segment.size}"
        wrong = base64.b64encode(bytes(32)).decode()
        assert "SHA-256 differs" in mismatch({**plain, "ChecksumSHA256": wrong}, segment)
        assert "MD5 (ETag) differs" in mismatch({**plain, "ETag": f'"{"0" * 32}"'}, segment)
        # KMS-encrypted: the ETag is no MD5; the SHA-256 checksum (S3 checks it at the PUT) decides
        kms = {"ContentLength": segment.size, "ETag": f'"{"0" * 32}"', "ServerSideEncryption": "aws:kms"}
        assert mismatch({**kms, "ChecksumSHA256": sha256}, segment) is None
        assert "cannot be verified" in mismatch(kms, segment)
        multipart = {"ContentLength": segment.size, "ETag": '"9b2cf5-2"'}
        assert "cannot be verified" in mismatch(multipart, segment)
    finally:
        segment.close()


# ---- outages and faults ----

def test_store_down_then_back_loses_and_duplicates_nothing(segments_dir, caplog):
    server = MotoServer()
    server.start()
    try:
        server.client().create_bucket(Bucket="outage")
        rec = Recorder(segments_dir)
        first = contents(rec.publish(2, rows=20, size=5000))
        shipper = Shipper(upload_config(server.url, "outage"), segments_dir)
        shipper.run_pass()
        uploaded_before = stored(server.client(), "outage")
        assert uploaded_before == as_objects(first)

        server.stop()  # the store goes down mid-run; the recorder goes on publishing
        later = contents(rec.publish(3, rows=20, size=5000))
        caplog.set_level(logging.INFO, logger="oisp.ship")
        delays = [shipper.run_pass() for _ in range(6)]
        s = shipper.stats
        assert local(segments_dir) == sorted(later)  # nothing deleted
        assert (s.upload_failures, s.retries, s.segments_uploaded, s.segments_deleted) == (6, 5, 2, 2)
        assert shipper.gauges.pending_segments == 3 and shipper.gauges.store_failing == 6
        # exponential backoff with jitter, capped (retry_initial_seconds 0.02, retry_max_seconds 0.1)
        assert 0.01 <= delays[0] <= 0.02 and all(0.05 <= d <= 0.1 for d in delays[3:])

        server.start()  # the same port; moto starts empty, so the bucket is made again
        server.client().create_bucket(Bucket="outage")
        assert shipper.run_pass() == shipper.cfg.poll_seconds

        uploaded_after = stored(server.client(), "outage")
        assert uploaded_after == as_objects(later)
        # every segment uploaded exactly once, and removed locally
        assert (s.segments_uploaded, s.segments_deleted, s.retries) == (5, 5, 6)
        assert sorted(uploaded_before | uploaded_after) == sorted(as_objects({**first, **later}))
        assert local(segments_dir) == [] and shipper.gauges.store_failing == 0
        log = [r.getMessage() for r in caplog.records]
        assert sum("upload failed" in m for m in log) == 1  # one warning for the whole outage
        assert any("takes segments again, after 6 failed attempts" in m for m in log)
    finally:
        server.stop()


def test_missing_credentials_are_named_and_nothing_is_deleted(moto, bucket, segments_dir, tmp_path,
                                                              monkeypatch, caplog):
    [path] = Recorder(segments_dir).publish(1)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find either
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    shipper = Shipper(upload_config(moto.url, bucket), segments_dir)
    caplog.set_level(logging.WARNING, logger="oisp.ship")
    shipper.run_pass()
    assert shipper.stats.upload_failures == 1 and path.exists()
    assert any("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in r.getMessage()
               for r in caplog.records)


def test_upload_cut_halfway_is_not_taken_for_done_and_is_redone(moto, bucket, proxy, segments_dir):
    [path] = Recorder(segments_dir).publish(1, rows=100, size=20_000)  # 2 MB
    original = path.read_bytes()
    shipper = Shipper(upload_config(proxy.url, bucket), segments_dir)
    proxy.arm("cut")
    shipper.run_pass()
    assert proxy.hit.is_set()
    assert path.read_bytes() == original  # kept
    s = shipper.stats
    assert (s.upload_failures, s.segments_uploaded, s.segments_deleted) == (1, 0, 0)
    assert stored(moto.client(), bucket).get(expected_key(path.name)) != original  # if anything, not it

    shipper.run_pass()
    assert stored(moto.client(), bucket) == as_objects({path.name: original})
    assert not path.exists() and (s.retries, s.segments_uploaded, proxy.puts) == (1, 1, 2)


def test_altered_upload_fails_verification_and_is_uploaded_again(moto, bucket, proxy, segments_dir, caplog):
    [path] = Recorder(segments_dir).publish(1, rows=100, size=20_000)
    original = path.read_bytes()
    shipper = Shipper(upload_config(proxy.url, bucket), segments_dir)
    proxy.arm("flip")
    caplog.set_level(logging.WARNING, logger="oisp.ship")
    shipper.run_pass()
    # the store took the altered body (moto does not check Content-MD5); the verification did not
    held = stored(moto.client(), bucket)[expected_key(path.name)]
    assert len(held) == len(original) and held != original
    assert path.read_bytes() == original  # not deleted
    s = shipper.stats
    assert (s.verify_failures, s.upload_failures, s.segments_uploaded) == (1, 1, 0)
    assert any("verification failed" in r.getMessage() and "MD5 (ETag) differs" in r.getMessage()
               for r in caplog.records)

    shipper.run_pass()
    assert stored(moto.client(), bucket) == as_objects({path.name: original})
    assert not path.exists() and (s.retries, s.segments_uploaded, proxy.puts) == (1, 1, 2)


def test_an_object_already_there_is_not_sent_again_and_a_partial_one_is_replaced(moto, bucket, proxy,
                                                                                segments_dir):
    first, second = Recorder(segments_dir).publish(2, rows=50, size=10_000)
    originals = contents([first, second])
    client = moto.client()
    # a killed run had uploaded the first and not deleted it; something left half of the second
    client.put_object(Bucket=bucket, Key=expected_key(first.name), Body=originals[first.name])
    client.put_object(Bucket=bucket, Key=expected_key(second.name), Body=originals[second.name][:5000])
    shipper = Shipper(upload_config(proxy.url, bucket), segments_dir)
    shipper.run_pass()
    assert stored(client, bucket) == as_objects(originals)
    assert proxy.puts == 1  # the second only
    s = shipper.stats
    assert (s.segments_already_there, s.segments_uploaded, s.segments_deleted) == (1, 1, 2)
    assert local(segments_dir) == []


def test_shipper_killed_mid_upload_then_restarted_loses_and_duplicates_nothing(moto, bucket, proxy,
                                                                              segments_dir, tmp_path):
    originals = contents(Recorder(segments_dir).publish(2, rows=100, size=20_000))
    command = [*write_config(tmp_path / "config.yaml", segments_dir, {
        "enabled": True, "bucket": bucket, "prefix": PREFIX, "endpoint_url": proxy.url, "region": "us-east-1",
        "retry_initial_seconds": 0.02, "retry_max_seconds": 0.1}), "--once"]
    proxy.arm("hold")
    killed = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.hit.wait(60), "the upload never got halfway"
    finally:
        killed.kill()
        killed.communicate()
    proxy.release()
    assert contents(segments_dir.iterdir()) == originals  # killed mid-upload: every segment still here

    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert stored(moto.client(), bucket) == as_objects(originals)
    assert local(segments_dir) == [] and proxy.puts == 3  # the cut one, then each once
    totals = json.loads(run.stderr.rsplit("totals ", 1)[1].splitlines()[0])
    assert totals["segments_uploaded"] + totals["segments_already_there"] == 2
    assert totals["segments_deleted"] == 2 and totals["upload_failures"] == 0


# ---- the command, as the DaemonSet runs it ----

def test_the_command_ships_until_sigterm_and_serves_its_counters(moto, bucket, segments_dir, tmp_path):
    rec = Recorder(segments_dir)
    first = contents(rec.publish(2))
    shipper = Running(write_config(tmp_path / "config.yaml", segments_dir, {
        "enabled": True, "bucket": bucket, "prefix": PREFIX, "endpoint_url": moto.url, "region": "us-east-1",
        "poll_seconds": 0.05, "stats_interval_seconds": 0.1}))
    try:
        assert scrape(shipper.port)["oisp_shipper_enabled"] == 1
        shipper.wait_for("oisp_shipper_segments_deleted_total", 2)
        later = contents(rec.publish(1))  # published while it runs: found at its next look
        samples = shipper.wait_for("oisp_shipper_segments_deleted_total", 3)
        deadline = time.monotonic() + 10
        while not any(" INFO totals {" in line for line in shipper.log):  # every stats_interval_seconds
            assert time.monotonic() < deadline, "".join(shipper.log)
            time.sleep(0.02)
    finally:
        code = shipper.stop()
    assert code == 0
    assert stored(moto.client(), bucket) == as_objects({**first, **later}) and local(segments_dir) == []
    assert samples["oisp_shipper_segments_uploaded_total"] == 3
    assert samples["oisp_shipper_pending_segments"] == 0
    log = "".join(shipper.log)
    final = json.loads(log.rsplit("final totals ", 1)[1].splitlines()[0])
    assert final["segments_uploaded"] == 3 and final["upload_failures"] == 0


def test_a_disabled_shipper_idles_ready_until_sigterm(segments_dir, tmp_path):
    (segments_dir / "worker-1-20260101T000000-77aa-000000.parquet").write_bytes(b"PAR1....PAR1")
    shipper = Running(write_config(tmp_path / "config.yaml", segments_dir, {"enabled": False}))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{shipper.port}/ready", timeout=5) as r:
            assert r.status == 200  # the pod's readiness probe
        assert scrape(shipper.port)["oisp_shipper_enabled"] == 0
    finally:
        code = shipper.stop()
    assert code == 0
    assert "upload.enabled is false: nothing to ship (idle until stopped)" in "".join(shipper.log)
    assert local(segments_dir) == ["worker-1-20260101T000000-77aa-000000.parquet"]


# ---- the quota, and the live analyzer ----

def test_segments_the_quota_deletes_before_upload_are_counted_as_lost(moto, segments_dir, tmp_path, caplog):
    sizes = [p.stat().st_size for p in Recorder(tmp_path).publish(2, rows=20, size=5000)]
    rec = Recorder(segments_dir, max_total_bytes=int(2.5 * max(sizes)))  # room for two
    later_bucket = f"segments-{next(_buckets)}"  # not there yet: the store refuses every upload
    shipper = Shipper(upload_config(moto.url, later_bucket), segments_dir)
    caplog.set_level(logging.WARNING, logger="oisp.ship")
    for _ in range(5):
        rec.publish(1, rows=20, size=5000)
        shipper.run_pass()
    survivors = contents(segments_dir.glob("*.parquet"))
    recorder = rec.counters()
    assert recorder["quota_deleted_segments"] == 3 and len(survivors) == 2
    s = shipper.stats
    assert s.segments_lost == recorder["quota_deleted_segments"]
    assert s.bytes_lost == recorder["quota_deleted_bytes"]
    lost = [r.getMessage() for r in caplog.records if "deleted before it was uploaded" in r.getMessage()]
    assert len(lost) == 3 and s.upload_failures == 5

    moto.client().create_bucket(Bucket=later_bucket)
    shipper.run_pass()
    assert stored(moto.client(), later_bucket) == as_objects(survivors)
    assert s.segments_uploaded == 2 and s.segments_lost == 3 and local(segments_dir) == []


def _follow(segments_dir, out) -> Follower:
    """The live analyzer's own loop body: read what is new, checkpoint after each segment."""
    cfg = AnalyzerConfig(hash_key=HASH_KEY.read_bytes().strip())  # the key of one_shot_lines
    f = Follower(FollowOptions(segments_dir, out, output_keep=50), cfg, FollowStats())
    f.start()
    assert f.replay(threading.Event())
    for name in f.pending():
        f.process_guarded(name)
        f.checkpoint()
    f.close()
    return f


def test_uploaded_segments_stay_until_the_live_analyzer_is_done_with_them(moto, bucket, segments_dir,
                                                                         tmp_path):
    whole, parts_dir = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir()
    parts_dir.mkdir()
    src, cut = interleaved(next((FIXTURES / "segments" / "sdk").glob("*.parquet")), whole)
    parts = split_segment(src, parts_dir, 6, cuts=(cut,))  # connections span the cuts
    out = tmp_path / "out" / "events.jsonl"
    shipper = Shipper(upload_config(moto.url, bucket, analyzer_checkpoint=checkpoint.path_for(out)),
                      segments_dir)
    for p in parts[:4]:
        publish(p, segments_dir)
    shipper.run_pass()  # no checkpoint yet: uploaded, kept
    assert shipper.stats.segments_uploaded == 4 and len(local(segments_dir)) == 4
    assert shipper.gauges.awaiting_analyzer == 4

    _follow(segments_dir, out)
    cp = checkpoint.load(checkpoint.path_for(out))
    assert cp.replay_from is not None  # a connection still open: its segments are read again at a restart
    shipper.run_pass()
    kept = local(segments_dir)
    assert kept == sorted(p.name for p in parts[:4] if p.name >= cp.replay_from) and len(kept) < 4
    assert shipper.stats.segments_uploaded == 4 and shipper.stats.segments_deleted == 4 - len(kept)

    for p in parts[4:]:
        publish(p, segments_dir)
    restarted = _follow(segments_dir, out)  # a restart re-reads from replay_from: all there
    assert restarted.stats.connections_lost == 0
    shipper.run_pass()
    assert stored(moto.client(), bucket) == as_objects(contents(parts))
    # the events are those of one pass over every segment, each once
    assert sorted(output_lines(out)) == sorted(one_shot_lines(parts_dir, tmp_path))
    cp = checkpoint.load(checkpoint.path_for(out))
    assert local(segments_dir) == sorted(n for n in cp.processed if cp.replay_from and n >= cp.replay_from)


@pytest.mark.parametrize("case", ["another directory", "delete_after_upload false"])
def test_uploaded_segments_are_kept_when_nothing_says_they_may_go(moto, bucket, segments_dir, tmp_path, case,
                                                                  caplog):
    paths = Recorder(segments_dir).publish(2)
    names = {p.name for p in paths}
    cp_path = tmp_path / ".events.jsonl.checkpoint"
    elsewhere = tmp_path / "other-segments"
    segments = str((elsewhere if case == "another directory" else segments_dir).resolve())
    checkpoint.save(Checkpoint(segments_dir=segments, processed=names), cp_path)
    cfg = upload_config(moto.url, bucket, analyzer_checkpoint=cp_path,
                        delete_after_upload=case != "delete_after_upload false")
    shipper = Shipper(cfg, segments_dir)
    caplog.set_level(logging.WARNING, logger="oisp.ship")
    shipper.run_pass()
    shipper.run_pass()
    assert shipper.stats.segments_uploaded == 2 and shipper.stats.segments_deleted == 0
    assert set(local(segments_dir)) == names
    warned = [r.getMessage() for r in caplog.records if "is for" in r.getMessage()]
    assert len(warned) == (1 if case == "another directory" else 0)  # once, not every pass

