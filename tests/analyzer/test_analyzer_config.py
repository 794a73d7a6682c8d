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
