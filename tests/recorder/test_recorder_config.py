"""The recorder's config section given values of every YAML shape: accepted, or a ConfigError naming the
key, never another exception (a traceback in a crash-looping pod says nothing to its operator)."""

from __future__ import annotations

import math

import pytest
import yaml

from recorder.config import _FIELDS, ConfigError, load_config

SHAPES = [None, True, 0, -1, 2**70, 1.5, float("nan"), float("inf"), "", "x", [], [1], [["a"]], {}, {"a": 1}]


def test_no_value_of_any_shape_escapes_as_another_error(tmp_path):
    path = tmp_path / "config.yaml"
    accepted = 0
    for key in _FIELDS:
        for value in SHAPES:
            path.write_text(yaml.safe_dump({"recorder": {"segments_dir": "/tmp/x", key: value}}))
            try:
                cfg = load_config(path, {})
            except ConfigError:
                continue
            accepted += 1
            got = getattr(cfg, key)
            assert not (isinstance(got, float) and not math.isfinite(got)), (key, value)
    assert accepted > 0


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_durations_are_refused(tmp_path, value):
    path = tmp_path / "config.yaml"
    path.write_text(f"recorder:\n  segments_dir: /tmp/x\n  segment_max_seconds: {value}\n")
    with pytest.raises(ConfigError, match="segment_max_seconds' must be a positive number"):
        load_config(path, {})


def test_binary_config_file_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path, {})


def test_plaintext_hooks_are_chosen_by_kernel_unless_set(tmp_path):
    from recorder.capture.probes import plaintext_hooks

    path = tmp_path / "config.yaml"
    path.write_text("recorder:\n  segments_dir: /tmp/x\n")
    cfg = load_config(path, {})
    # the socket layer's tracepoints came with Linux 6.3
    assert plaintext_hooks(cfg, "6.3.0-1-amd64") == "socket"
    assert plaintext_hooks(cfg, "6.2.16") == "syscalls"
    assert plaintext_hooks(cfg, "5.14.0-427.el9.x86_64") == "syscalls"
    path.write_text("recorder:\n  segments_dir: /tmp/x\n  plaintext_hooks: syscalls\n")
    assert plaintext_hooks(load_config(path, {}), "6.18.1") == "syscalls"
    path.write_text("recorder:\n  segments_dir: /tmp/x\n  plaintext_hooks: kprobes\n")
    with pytest.raises(ConfigError, match="'plaintext_hooks' must be one of auto, socket, syscalls"):
        load_config(path, {})
