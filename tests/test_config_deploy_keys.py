"""Config behaviour the Kubernetes deployment relies on: the analyzer's `otlp` block is accepted,
checked for shape and announced as not supported yet; the recorder names the node from $NODE_NAME
(the downward API), not from the pod's host name."""

from __future__ import annotations

import logging
import socket
import subprocess

import pytest

from analyzer.config import OTLP_NOT_SUPPORTED, AnalyzerConfigError, load
from conftest import BIN, REPO
from recorder.config import RecorderConfig, default_node_name, load_config

OTLP = "analyzer:\n  otlp:\n    endpoint: http://collector:4318\n    protocol: http/protobuf\n" \
       "    headers: {x-tenant: audit}\n    insecure: true\n"


def write(tmp_path, text):
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_otlp_block_is_kept_and_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="oisp.analyze"):
        cfg = load(write(tmp_path, OTLP))
    assert cfg.otlp == {"endpoint": "http://collector:4318", "protocol": "http/protobuf",
                        "headers": {"x-tenant": "audit"}, "insecure": True}
    assert [r.getMessage() for r in caplog.records] == [OTLP_NOT_SUPPORTED]
    assert "OTLP export is not supported yet" in OTLP_NOT_SUPPORTED


def test_no_otlp_block_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="oisp.analyze"):
        assert load(write(tmp_path, "analyzer:\n  content: none\n")).otlp is None
    assert caplog.records == []


@pytest.mark.parametrize("block, message", [
    ("  otlp: http://collector:4318\n", "analyzer.otlp must be a mapping"),
    ("  otlp: {endpoint: collector:4317}\n", "endpoint must be an http:// or https:// URL"),
    ("  otlp: {protocol: grpc}\n", "endpoint must be an http:// or https:// URL"),
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


def test_analyzer_cli_says_otlp_is_not_supported(tmp_path):
    out = subprocess.run([str(BIN / "oisp-analyze"), "samples/segments", "--out", str(tmp_path / "e.jsonl"),
                          "--config", str(write(tmp_path, OTLP))], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "OTLP export is not supported yet" in out.stderr


def test_recorder_ignores_the_analyzer_otlp_block(tmp_path):
    cfg = load_config(write(tmp_path, "recorder:\n  segments_dir: /s\n" + OTLP), {})
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
