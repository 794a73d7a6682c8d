"""Config behaviour the Kubernetes deployment relies on: the OTLP block (`export.otlp`, or its first
name `analyzer.otlp`) is accepted and checked for shape, and the recorder reads the same file past it;
the recorder names the node from $NODE_NAME (the downward API), not from the pod's host name."""

from __future__ import annotations

import logging
import socket
import subprocess

import pytest

from analyzer.config import AnalyzerConfigError, load
from conftest import BIN, REPO
from recorder.config import RecorderConfig, default_node_name, load_config

OTLP = "analyzer:\n  otlp:\n    endpoint: http://collector:4318\n    protocol: http/protobuf\n" \
       "    headers: {x-tenant: audit}\n    insecure: true\n"
EXPORT = "export:\n  otlp:\n    endpoint: otel-collector.monitoring:4317\n    insecure: true\n"


def write(tmp_path, text):
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_otlp_block_is_kept_under_either_name_without_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="oisp.analyze"):
        old = load(write(tmp_path, OTLP)).otlp
        new = load(write(tmp_path, EXPORT)).otlp
    assert (old.endpoint, old.protocol, old.headers, old.http_url("traces")) == (
        "http://collector:4318", "http/protobuf", {"x-tenant": "audit"}, "http://collector:4318/v1/traces")
    assert (new.endpoint, new.protocol, new.plaintext, new.grpc_target()) == (
        "otel-collector.monitoring:4317", "grpc", True, "otel-collector.monitoring:4317")
    assert caplog.records == []


def test_no_otlp_block_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="oisp.analyze"):
        assert load(write(tmp_path, "analyzer:\n  content: none\n")).otlp is None
    assert caplog.records == []


@pytest.mark.parametrize("block, message", [
    ("  otlp: http://collector:4318\n", "analyzer.otlp must be a mapping"),
    ("  otlp: {endpoint: collector}\n", "endpoint must be host:port or an http:// or https:// URL"),
    ("  otlp: {protocol: grpc}\n", "endpoint must be host:port or an http:// or https:// URL"),
    ("  otlp: {endpoint: 'http://c:4317', protocol: thrift}\n", "protocol must be one of grpc"),
    ("  otlp: {endpoint: 'http://c:4317', headers: [a]}\n", "headers must map header names"),
    ("  otlp: {endpoint: 'http://c:4317', headers: {a: 1}}\n", "headers must map header names"),
    ("  otlp: {endpoint: 'http://c:4317', insecure: 'no'}\n", "insecure must be true or false"),
    ("  otlp: {endpoint: 'http://c:4317', timeout: 5}\n", "unknown key(s) in analyzer.otlp: timeout"),
])
def test_malformed_otlp_block_is_a_usage_error(tmp_path, block, message):
    path = write(tmp_path, "analyzer:\n" + block)
    with pytest.raises(AnalyzerConfigError) as err:
        load(path)
    assert message in str(err.value)
    out = subprocess.run([str(BIN / "oisp-analyze"), "samples/segments", "--out", "-", "--config", str(path)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_recorder_reads_past_the_otlp_blocks(tmp_path):
    for block in (OTLP, EXPORT):
        cfg = load_config(write(tmp_path, "recorder:\n  segments_dir: /s\n" + block), {})
        assert str(cfg.segments_dir) == "/s"


def test_node_name_comes_from_the_downward_api(monkeypatch):
    assert default_node_name({"NODE_NAME": "worker-7"}) == "worker-7"
    assert default_node_name({"NODE_NAME": ""}) == socket.gethostname()
    assert default_node_name({}) == socket.gethostname()
    monkeypatch.setenv("NODE_NAME", "worker-7")
    assert RecorderConfig().node_name == "worker-7"
    monkeypatch.delenv("NODE_NAME")
    assert RecorderConfig().node_name == socket.gethostname()


def test_config_file_node_name_beats_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NODE_NAME", "from-env")
    cfg = load_config(write(tmp_path, "recorder:\n  segments_dir: /s\n  node_name: from-file\n"), {})
    assert cfg.node_name == "from-file"
    assert load_config(write(tmp_path, "recorder:\n  segments_dir: /s\n"), {}).node_name == "from-env"
