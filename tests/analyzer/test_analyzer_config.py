"""The analyzer's config section: user endpoints, content mode, hash key; errors for bad input."""

from __future__ import annotations

import json
import subprocess

import pytest

from analyzer.config import AnalyzerConfigError, load
from conftest import BIN, REPO


def write(tmp_path, text):
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_endpoints_turn_an_unknown_host_into_a_provider(tmp_path):
    # the sample's calls go to localhost:PORT; configured, they become vLLM calls found by host
    port = json.loads(subprocess.run([str(BIN / "oisp-analyze"), "samples/segments", "--exchanges", "-"],
                                     cwd=REPO, capture_output=True, text=True, check=True).stdout
                      .splitlines()[0])["authority"]
    key = tmp_path / "hash.key"
    key.write_text("0123456789abcdef0123456789abcdef")
    cfg = write(tmp_path, f"recorder:\n  segments_dir: /x\nanalyzer:\n  content: hash\n"
                          f"  hash_key_file: {key}\n  endpoints:\n    '{port}': {{provider: vllm}}\n")
    out = tmp_path / "events.jsonl"
    subprocess.run([str(BIN / "oisp-analyze"), "samples/segments", "--out", str(out), "--config", str(cfg)],
                   cwd=REPO, check=True, capture_output=True)
    req = json.loads(out.read_text().splitlines()[0])
    assert req["data"]["provider"]["name"] == "vllm" and req["attrs"]["provider_matched_by"] == "user"
    assert req["confidence"]["level"] == "high"
    assert req["data"]["messages"][0]["content"]["$redacted"]["hash"].startswith("hmac-sha256:")


@pytest.mark.parametrize("text, message", [
    ("analyzer:\n  contnet: full\n", "unknown key 'analyzer.contnet'"),
    ("analyzer:\n  content: everything\n", "must be full, hash or none"),
    ("analyzer:\n  endpoints:\n    x: {provider: vllm, api_format: grpc}\n", "api_format must be one of"),
    ("analyzer:\n  endpoints:\n    x: {model: y}\n", "needs provider"),
    ("analyzr: {}\n", "unknown top-level key(s): analyzr"),
    ("analyzer:\n  hash_key_file: /no/such/file\n", "hash_key_file /no/such/file"),
    # values of the wrong shape: each a one-line usage error, never a traceback
    ("analyzer:\n  hash_key_file: 5\n", "hash_key_file must be the path of a file"),
    ("analyzer:\n  hash_key_file:\n", "hash_key_file must be the path of a file"),
    ("analyzer:\n  endpoints:\n    x: {provider: vllm, api_format: [openai]}\n", "api_format must be one of"),
    ("export:\n  otlp: {endpoint: 'h:4317', signals: [[traces]]}\n", "signals must be a non-empty list"),
    ("analyzer:\n  poll_interval_seconds: .nan\n", "poll_interval_seconds must be"),
    ("analyzer:\n  connection_timeout_seconds: .inf\n", "connection_timeout_seconds must be"),
    ("export:\n  otlp: {endpoint: 'h:4317', timeout_seconds: .nan}\n", "timeout_seconds must be"),
])
def test_bad_config_is_a_usage_error(tmp_path, text, message):
    with pytest.raises(AnalyzerConfigError, match=None) as err:
        load(write(tmp_path, text))
    assert message in str(err.value)
    out = subprocess.run([str(BIN / "oisp-analyze"), "samples/segments", "--out", "-", "--config",
                          str(write(tmp_path, text))], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_recorder_accepts_the_shared_file(tmp_path):
    from recorder.config import load_config

    cfg = load_config(write(tmp_path, "recorder:\n  segments_dir: /x\nanalyzer:\n  content: none\n"), {})
    assert str(cfg.segments_dir) == "/x"


# Every key of the analyzer's section and of export.otlp, given values of every YAML shape: the loader
# either accepts the value or says why in an AnalyzerConfigError, nothing else.
SHAPES = [None, True, 0, -1, 2**70, 1.5, float("nan"), float("inf"), "", "x", "\x00", [], [1], [["a"]],
          {}, {"a": 1}, {"a": [1]}, {"h:1": {"provider": "x", "api_format": ["a"]}}, {"h": {"provider": [1]}}]


def test_no_value_of_any_shape_escapes_as_another_error(tmp_path):
    import yaml

    from analyzer.config import _FOLLOW_KEYS
    from analyzer.sinks.otlp_settings import KEYS as OTLP_KEYS

    docs = [{"analyzer": {k: v}} for k in ["content", "hash_key_file", "endpoints", "otlp",
                                           "metrics_address", *_FOLLOW_KEYS] for v in SHAPES]
    docs += [{"export": {"otlp": {"endpoint": "h:4317", k: v}}} for k in OTLP_KEYS for v in SHAPES]
    docs += [{section: v} for section in ("analyzer", "export", "recorder") for v in SHAPES]
    accepted = 0
    for doc in docs:
        path = write(tmp_path, yaml.safe_dump(doc))
        try:
            cfg = load(path)
        except AnalyzerConfigError:
            continue
        accepted += 1
        for key in ("poll_interval_seconds", "connection_timeout_seconds"):
            assert 0 < getattr(cfg, key) < float("inf"), doc
        assert 0 <= cfg.connection_idle_seconds < float("inf"), doc  # 0: finished exchanges at once
    assert 0 < accepted < len(docs)


def test_binary_config_file_is_a_usage_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01 not text")
    with pytest.raises(AnalyzerConfigError, match="not UTF-8 text"):
        load(path)
