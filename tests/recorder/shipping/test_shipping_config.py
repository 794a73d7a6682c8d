"""The `upload:` block and `oisp-ship`'s command line: every value checked with a message naming the key,
the deployed ConfigMap's block accepted by all three programs, object keys named by node and date, the
backoff bounded. No store needed."""

from __future__ import annotations

import random
import subprocess

import pytest
import yaml

from analyzer.config import load as load_analyzer_config
from conftest import BIN, REPO
from recorder.config import ConfigError, load_config
from recorder.shipping.backoff import Backoff
from recorder.shipping.config import UploadConfig, load_upload_config, parse_upload
from recorder.shipping.keys import object_key

CONFIGMAP = REPO / "manifests" / "base" / "config.yaml"


def test_a_full_block_is_read_as_written():
    cfg = parse_upload({"enabled": True, "bucket": "oisp.segments-1", "prefix": "/fleet/raw/",
                        "endpoint_url": "https://minio.storage:9000/", "region": "eu-west-1",
                        "addressing_style": "path", "delete_after_upload": False,
                        "analyzer_checkpoint": "/output/.events.jsonl.checkpoint", "poll_seconds": 2,
                        "retry_initial_seconds": 0.5, "retry_max_seconds": 30})
    assert cfg.prefix == "fleet/raw" and cfg.endpoint_url == "https://minio.storage:9000"
    assert cfg.bucket_url() == "s3://oisp.segments-1/fleet/raw" and cfg.poll_seconds == 2.0
    assert str(cfg.analyzer_checkpoint) == "/output/.events.jsonl.checkpoint" and not cfg.delete_after_upload
    assert parse_upload(None) == UploadConfig() and not UploadConfig().enabled  # no block: disabled
    assert parse_upload({"enabled": True, "bucket": "b-1", "prefix": ""}).bucket_url() == "s3://b-1"


@pytest.mark.parametrize("block, message", [
    ({"enabled": True}, "upload.enabled is true but upload.bucket is not set"),
    ({"enabled": True, "bucket": None}, "upload.enabled is true but upload.bucket is not set"),
    ({"bucket": "Segments"}, "upload.bucket 'Segments' is not a bucket name"),
    ({"bucket": "s3://segments"}, "is not a bucket name"),
    ({"bucket": "ab"}, "is not a bucket name"),
    ({"bucket": "a..b"}, "is not a bucket name"),
    ({"endpoint_url": "minio.storage:9000"}, "must be an http:// or https:// URL with a host"),
    ({"endpoint_url": "ftp://minio"}, "must be an http:// or https:// URL with a host"),
    ({"endpoint_url": "http://"}, "must be an http:// or https:// URL with a host"),
    ({"endpoint_url": "http://minio:ninety"}, "upload.endpoint_url 'http://minio:ninety' is not a URL"),
    ({"endpoint_url": "https://minio:9000/segments"}, "must be scheme://host[:port] only"),
    ({"endpoint_url": "https://key:secret@minio"}, "must be scheme://host[:port] only"),
    ({"endpoint_url": 9000}, "upload.endpoint_url must be an http:// or https:// URL"),
    ({"prefix": "a//b"}, "upload.prefix 'a//b' must be '/'-separated names"),
    ({"prefix": "a/../b"}, "must be '/'-separated names"),
    ({"prefix": "a\nb"}, "must be '/'-separated names"),
    ({"enabled": "yes"}, "upload.enabled must be true or false"),
    ({"poll_seconds": 0}, "upload.poll_seconds must be a positive number of seconds"),
    ({"retry_max_seconds": float("inf")}, "upload.retry_max_seconds must be a positive number of seconds"),
    ({"retry_initial_seconds": 10, "retry_max_seconds": 1}, "upload.retry_initial_seconds (10) is over"),
    ({"addressing_style": "dns"}, "upload.addressing_style must be one of auto, path, virtual"),
    ({"analyzer_checkpoint": ""}, "upload.analyzer_checkpoint must be a path"),
    ({"region": ""}, "upload.region must be a non-empty string"),
    ({"buckets": "segments", "secret_key": "x"}, "unknown key(s) in upload: buckets, secret_key"),
    (["bucket"], "'upload' must be a mapping"),
])
def test_bad_blocks_are_refused_naming_the_key(block, message):
    with pytest.raises(ConfigError) as err:
        parse_upload(block)
    assert message in str(err.value)


def test_the_configmap_block_is_accepted_by_every_program(tmp_path):
    """One file for the three containers: each reads its part and accepts the others'."""
    doc = yaml.safe_load(CONFIGMAP.read_text())
    cfg = load_upload_config(CONFIGMAP)
    assert not cfg.enabled and cfg.bucket is None  # shipped disabled
    # every key of the dataclass is spelled out in the ConfigMap, so that it documents them all
    assert set(doc["upload"]) == set(UploadConfig.__dataclass_fields__)
    assert str(cfg.analyzer_checkpoint) == "/output/.events.jsonl.checkpoint"
    assert load_config(CONFIGMAP, {}).segments_dir is not None
    # the analyzer's part names the ConfigMap's prices.yaml where the pod mounts it: here, beside a copy
    (tmp_path / "prices.yaml").write_text((CONFIGMAP.parent / "prices.yaml").read_text())
    (tmp_path / "config.yaml").write_text(CONFIGMAP.read_text().replace("/etc/oisp-sensor/", f"{tmp_path}/"))
    load_analyzer_config(tmp_path / "config.yaml")
    # enabled with a bucket, as manifests/README.md says to
    doc["upload"].update(enabled=True, bucket="oisp-segments")
    doc["analyzer"]["prices_file"] = str(tmp_path / "prices.yaml")
    enabled = tmp_path / "config.yaml"
    enabled.write_text(yaml.safe_dump(doc))
    assert load_upload_config(enabled).enabled
    load_config(enabled, {})
    load_analyzer_config(enabled)


@pytest.mark.parametrize("upload, message", [
    ({"enabled": True}, "upload.enabled is true but upload.bucket is not set"),
    ({"enabled": True, "bucket": "segments", "endpoint_url": "minio:9000"},
     "upload.endpoint_url 'minio:9000' must be an http:// or https:// URL with a host"),
])
def test_the_command_refuses_a_bad_block_with_one_line(tmp_path, upload, message):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"recorder": {"segments_dir": str(tmp_path)}, "upload": upload}))
    run = subprocess.run([str(BIN / "oisp-ship"), "--config", str(config), "--once"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and message in run.stderr
    assert "Traceback" not in run.stderr


def test_the_command_does_nothing_when_upload_is_disabled(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"recorder": {"segments_dir": str(tmp_path)}}))
    (tmp_path / "worker-1-20260101T000000-77aa-000000.parquet").write_bytes(b"PAR1....PAR1")
    run = subprocess.run([str(BIN / "oisp-ship"), "--config", str(config), "--once"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and "upload.enabled is false: nothing to ship" in run.stderr
    assert (tmp_path / "worker-1-20260101T000000-77aa-000000.parquet").exists()


def test_object_keys_are_named_by_node_and_day_from_the_segment_name():
    name = "ip-10-0-3-7.ec2.internal-20261130T235959-6617c2100ef9f-000042"
    assert object_key("fleet/raw", name) == (
        f"fleet/raw/node=ip-10-0-3-7.ec2.internal/date=2026-11-30/{name}.parquet")
    assert object_key("", name) == f"node=ip-10-0-3-7.ec2.internal/date=2026-11-30/{name}.parquet"
    for odd in ("notes", "worker-1-2026-6617c2-000001", "worker-1-20261130T235959-6617c2",
                "-20261130T235959-a-000001"):
        assert object_key("p", odd) is None


def test_backoff_doubles_up_to_its_cap_with_jitter_and_resets():
    b = Backoff(initial=1.0, maximum=8.0, rng=random.Random(7))
    delays = [b.failed() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays[3:]}) == 5  # jittered: nodes failing together spread out
    b.succeeded()
    assert b.failures == 0 and 0.5 <= b.failed() <= 1.0
    many = Backoff(initial=1.0, maximum=60.0)
    assert max(many.failed() for _ in range(2000)) <= 60.0  # never overflows, never beyond the cap
