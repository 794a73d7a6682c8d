"""Prometheus metrics of both programs (`--metrics-port`), scraped over HTTP: the live analyzer's
counters against what it really read and wrote, the recorder's collector, config checks, and the real
recorder's byte counter growing under a TLS workload."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from analyzer.config import AnalyzerConfigError
from analyzer.config import load as load_analyzer_config
from conftest import BIN, REPO
from contract.metrics_server import MetricsServer
from helpers.follow_helpers import make_parts, one_shot_lines, processed, publish, start_follow, wait_for
from recorder.config import ConfigError, load_config
from recorder.metrics import RecorderMetrics


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def status(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_live_analyzer_metrics(tmp_path):
    parts = make_parts(tmp_path / "parts", {"sdk": 3, "sdk_more": 2})
    truth = one_shot_lines(tmp_path / "parts", tmp_path)
    seg, out, log = tmp_path / "segments", tmp_path / "events.jsonl", tmp_path / "analyzer.log"
    seg.mkdir()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"analyzer": {"poll_interval_seconds": 0.05,
                                                "metrics_address": "127.0.0.1"}}))
    proc = start_follow(seg, out, log, "--config", str(cfg), "--metrics-port", "0")
    try:
        port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text()).group(1))
        assert status(port, "/ready") == 200 and status(port, "/healthz") == 200
        assert status(port, "/other") == 404
        before = scrape(port)
        assert before["oisp_analyzer_segments_processed_total"] == 0 and before["oisp_analyzer_ready"] == 1
        for p in parts:
            publish(p, seg)
        (seg / "zz-not-a-segment.parquet").write_bytes(b"PAR1 garbage")  # unreadable: a problem
        names = {p.name for p in parts} | {"zz-not-a-segment.parquet"}
        wait_for(lambda: processed(out) == names, what="all processed", proc=proc)
        m = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert m["oisp_analyzer_segments_processed_total"] == len(parts) + 1
    assert m["oisp_analyzer_problems_total"] == 1
    assert m["oisp_analyzer_rows_read_total"] == sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    assert m["oisp_analyzer_events_written_total"] == len(truth) == len(out.read_text().splitlines())
    assert m["oisp_analyzer_exchanges_total"] >= len(truth) // 2 > 0
    assert m["oisp_analyzer_events_skipped_total"] == 0
    assert m["oisp_analyzer_pending_segments"] == 0 and m["oisp_analyzer_lag_seconds"] == 0
    assert 0 <= m["oisp_analyzer_newest_segment_age_seconds"] < 60
    assert m["oisp_analyzer_open_connections"] == 0


def test_recorder_collector_over_http(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"x" * 1000)
    (tmp_path / ".b.arrows.inprogress").write_bytes(b"y" * 234)
    metrics = RecorderMetrics(tmp_path)
    server = MetricsServer("127.0.0.1", 0, metrics.registry(), ready=lambda: metrics.ready)
    try:
        assert status(server.port, "/ready") == 503 and status(server.port, "/healthz") == 200
        assert scrape(server.port)["oisp_recorder_ready"] == 0
        metrics.update({"bytes": 5, "records": 2, "dropped_bytes": 0, "segments_written": 1}, libraries=3)
        metrics.ready = True
        m = scrape(server.port)
        assert status(server.port, "/ready") == 200
    finally:
        server.close()
    assert m["oisp_recorder_bytes_total"] == 5 and m["oisp_recorder_records_total"] == 2
    assert m["oisp_recorder_dropped_bytes_total"] == 0 and m["oisp_recorder_segments_written_total"] == 1
    assert m["oisp_recorder_libraries_probed"] == 3 and m["oisp_recorder_ready"] == 1
    assert m["oisp_recorder_segments_dir_bytes"] == 1234


def test_metrics_config_keys(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"recorder": {"segments_dir": str(tmp_path), "metrics_port": 9101,
                                                 "metrics_address": "127.0.0.1"},
                                    "analyzer": {"metrics_port": 9102, "output_max_bytes": 1000,
                                                 "output_keep": 2, "connection_idle_seconds": 1.5}}))
    rec = load_config(path, {})
    assert (rec.metrics_port, rec.metrics_address) == (9101, "127.0.0.1")
    assert load_config(path, {"metrics_port": 0}).metrics_port == 0  # the flag wins
    assert load_config(None, {"segments_dir": tmp_path}).metrics_port is None  # default: off
    ana = load_analyzer_config(path)
    assert (ana.metrics_port, ana.output_max_bytes, ana.output_keep, ana.connection_idle_seconds) == \
        (9102, 1000, 2, 1.5)
    for bad in (70000, -1, "9101", True):
        path.write_text(yaml.safe_dump({"recorder": {"segments_dir": "/x", "metrics_port": bad}}))
        with pytest.raises(ConfigError, match="metrics_port"):
            load_config(path, {})
        path.write_text(yaml.safe_dump({"analyzer": {"metrics_port": bad}}))
        with pytest.raises(AnalyzerConfigError, match="metrics_port"):
            load_analyzer_config(path)
    for key, bad in (("output_keep", 0), ("output_max_bytes", -5), ("connection_timeout_seconds", 0),
                     ("poll_interval_seconds", "fast")):
        path.write_text(yaml.safe_dump({"analyzer": {key: bad}}))
        with pytest.raises(AnalyzerConfigError, match=key):
            load_analyzer_config(path)


def test_busy_metrics_port_is_a_clear_error(tmp_path):
    blocker = MetricsServer("127.0.0.1", 0, RecorderMetrics(tmp_path).registry())
    try:
        result = subprocess.run([str(BIN / "oisp-analyze"), str(tmp_path), "--follow", "--out",
                                 str(tmp_path / "e.jsonl"), "--metrics-port", str(blocker.port)],
                                capture_output=True, text=True, timeout=30)
    finally:
        blocker.close()
    assert result.returncode == 1 and "cannot serve metrics" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.ebpf
def test_recorder_metrics_under_tls_workload(recorder_factory, pki):
    from testbed.https_server import HttpsServer
    from testbed.ssl_client import payload

    rec = recorder_factory(config={"metrics_address": "127.0.0.1", "stats_interval_seconds": 60},
                           args=["--metrics-port", "0"])
    port = rec.ready["metrics_port"]
    first = scrape(port)
    assert first["oisp_recorder_ready"] == 1 and first["oisp_recorder_libraries_probed"] >= 1
    assert status(port, "/ready") == 200
    server = HttpsServer(pki.server_context(), body_for=lambda path, body: payload(20000, len(body)))
    try:
        out = subprocess.run([sys.executable, "-m", "testbed.ssl_client", str(server.port), str(pki.ca_file),
                              "300000", "1000"], cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=120)
    finally:
        server.close()
    sent = len(bytes.fromhex(json.loads(out.stdout)["sent"]))
    # the client's bytes and the server's (in this process) both cross probed libssl calls
    def grown_enough():
        m = scrape(port)
        grew = m["oisp_recorder_bytes_total"] - first["oisp_recorder_bytes_total"]
        return grew >= 2 * sent and m["oisp_recorder_rows_written_total"] > 0 and m

    grown = wait_for(grown_enough, timeout=30, what="the bytes counter to grow by the workload")
    assert grown["oisp_recorder_records_total"] > first["oisp_recorder_records_total"]
    assert grown["oisp_recorder_dropped_bytes_total"] == 0
    assert rec.stop() == 0, rec.log
    assert "metrics on http://127.0.0.1:" in rec.log
