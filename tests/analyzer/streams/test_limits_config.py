"""The budgets of the protocol layer are `analyzer:` keys: validated, documented, passed on."""

from __future__ import annotations

from dataclasses import fields

import pytest

import analyzer.config
from analyzer.config import AnalyzerConfigError, load
from analyzer.model import Limits

KEYS = [f.name for f in fields(Limits)]


def test_defaults_and_values(tmp_path):
    assert load(None).limits == Limits()
    p = tmp_path / "c.yaml"
    p.write_text("analyzer:\n  max_open_streams: 50\n  max_body_bytes: 1.0e+6\n")
    cfg = load(p)
    assert cfg.limits.max_open_streams == 50 and cfg.limits.max_body_bytes == 1_000_000
    assert cfg.limits.max_gap_records == Limits().max_gap_records


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", ["0", "-1", ".inf", ".nan", "1.5", "true", "'10'", "[1]", "null"])
def test_bad_values_are_usage_errors(tmp_path, key, value):
    p = tmp_path / "c.yaml"
    p.write_text(f"analyzer:\n  {key}: {value}\n")
    with pytest.raises(AnalyzerConfigError, match=key):
        load(p)


@pytest.mark.parametrize("key", KEYS)
def test_every_key_is_documented(key):
    assert f"{key}:" in analyzer.config.__doc__
