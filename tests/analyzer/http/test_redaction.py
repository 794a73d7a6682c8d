"""The redaction functions (analyzer/http/redaction.py) one by one, and the installation's hash key
(analyzer/config.py): made once, 0600, reused, refused when it is a link, not ours or open to others."""

from __future__ import annotations

import os
import subprocess

import pytest

from analyzer.config import AnalyzerConfig, AnalyzerConfigError, installation_key, key_path, resolve_hash_key
from analyzer.http.redaction import (
    REDACTED,
    escape_controls,
    for_terminal,
    is_secret_name,
    redact_authority,
    redact_cmdline,
    redact_event,
    redact_headers,
    redact_text,
    redact_url,
)
from conftest import BIN
from helpers.analyzer_inputs import FIXTURES

R = REDACTED


@pytest.mark.parametrize("name", ["Authorization", "proxy-authorization", "x-auth-user", "x-api-key",
                                  "x-portkey-api-key", "Ocp-Apim-Subscription-Key", "cookie", "set-cookie",
                                  "x-session-id", "x-password", "x-credential", "x-signature",
                                  "x-amz-security-token", "x-amz-content-sha256", "access_token", "sig"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["content-type", "host", "x-ratelimit-remaining-tokens",
                                  "anthropic-ratelimit-tokens-limit", "max_tokens", "x-request-id", "model"])
def test_names_that_carry_no_secret(name):
    assert not is_secret_name(name)


def test_headers_by_pattern_and_values_by_shape():
    assert redact_headers([("x-portkey-api-key", "pk"), ("Ocp-Apim-Subscription-Key", "k"),
                           ("x-note", "see sk-proj-abcdefghijkl0123"), ("accept", "*/*")]) == [
        ["x-portkey-api-key", R], ["Ocp-Apim-Subscription-Key", R], ["x-note", f"see {R}"], ["accept", "*/*"]]


@pytest.mark.parametrize("url, expected", [
    ("/v1beta/models/g:generateContent?key=AIzaSyA0123456789abc&alt=json",
     f"/v1beta/models/g:generateContent?key={R}&alt=json"),
    ("https://user:pass@h.example/x?a=1&access_token=t&max_tokens=5",
     f"https://{R}@h.example/x?a=1&access_token={R}&max_tokens=5"),
    ("/s?X-Amz-Signature=abc&X-Amz-Credential=AKIAABCDEFGHIJKLMNOP%2F&sig=z", f"/s?X-Amz-Signature={R}"
     f"&X-Amz-Credential={R}&sig={R}"),
    ("/plain/path", "/plain/path"),
    (None, None),
])
def test_urls(url, expected):
    assert redact_url(url) == expected


def test_authority_userinfo():
    assert redact_authority("u:p@api.example:443") == f"{R}@api.example:443"
    assert redact_authority("api.example") == "api.example"


@pytest.mark.parametrize("secret", [
    "sk-0123456789abcdefghij", "sk-proj-0123456789abcdef", "sk-ant-api03-0123456789abcdef",
    "AIzaSyA0123456789abcdefghij", "AKIAABCDEFGHIJKLMNOP", "ASIAABCDEFGHIJKLMNOP",
    "ghp_0123456789abcdefghij", "gho_0123456789abcdefghij", "ghs_0123456789abcdefghij",
    "github_pat_0123456789abcdefghij", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "xoxb-0123456789-abcdefghij", "xoxp-0123456789-abcdefghij"])
def test_key_shapes_anywhere_in_text(secret):
    assert redact_text(f"the key {secret}, again:{secret}") == f"the key {R}, again:{R}"


def test_text_credentials_by_context():
    assert redact_text("Authorization: Bearer abc.def-123456") == f"Authorization: {R}"
    assert redact_text("use bearer abcdefgh12345 here") == f"use bearer {R} here"
    assert redact_text("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") == \
        f"aws_secret_access_key = {R}"
    assert redact_text('{"password": "hunter2", "max_tokens": "5", "model": "m"}') == \
        f'{{"password": "{R}", "max_tokens": "5", "model": "m"}}'
    assert redact_text("grant_type=refresh&refresh_token=abc&client_secret=xyz") == \
        f"grant_type=refresh&refresh_token={R}&client_secret={R}"
    # words that merely contain a key prefix, and ordinary text, stay
    plain = "task-management-system risk_assessment_v2 Content-Type: application/json 2024-01-01T00:00:00Z"
    assert redact_text(plain) == plain


def test_cmdline_as_arguments():
    args = ["curl", "-HAuthorization: Bearer abc", "--header=x-api-key: k1", "-H", "Cookie: a=b",
            "--header", "X-Trace: 1", "-u", "user:pass", "-uadm:pw", "--user=u:p", "--api-key", "k2",
            "--token=k3", "OPENAI_API_KEY=k4", "https://bob:pw@h.example/x?a=1&key=k5",
            "sk-ant-api03-k6abcdefgh", "--model", "gpt-4o", "http://h/?x=1"]
    assert redact_cmdline(args) == [
        "curl", f"-HAuthorization: {R}", f"--header=x-api-key: {R}", "-H", f"Cookie: {R}", "--header",
        "X-Trace: 1", "-u", R, f"-u{R}", f"--user={R}", "--api-key", R, f"--token={R}",
        f"OPENAI_API_KEY={R}", f"https://{R}@h.example/x?a=1&key={R}", R, "--model", "gpt-4o",
        "http://h/?x=1"]


def test_event_walk_keeps_only_content_fields_with_full():
    key = "sk-proj-0123456789abcdef"
    event = {"data": {"messages": [{"role": "user", "content": key}], "tool_calls": [{"arguments": key}],
                      "choices": [{"message": {"content": key}}], "error": {"message": key},
                      "provider": {"endpoint": f"https://h/x?key={key}"}},
             "process": {"cmdline": f"x --api-key {key}"}, "attrs": {"n": 5, "ok": True}}
    full = redact_event(event, "full")
    assert full["data"]["messages"][0]["content"] == key and full["data"]["tool_calls"][0]["arguments"] == key
    assert full["data"]["choices"][0]["message"]["content"] == key
    rest = {**full["data"], "messages": 0, "tool_calls": 0, "choices": 0}
    assert key not in str(rest) + str(full["process"])
    assert full["attrs"] == {"n": 5, "ok": True}
    assert key not in str(redact_event(event, "hash"))
    assert event["data"]["error"]["message"] == key  # a copy: the event itself is not changed


def test_terminal_text_is_escaped():
    assert escape_controls("a\x1b[2J\x07\x9b\r\n\\b") == "a\\x1b[2J\\x07\\x9b\\r\\n\\\\b"
    assert for_terminal("GET /?key=abc HTTP/1.1\r\n\x1b]0;t\x07") == \
        f"GET /?key={R} HTTP/1.1\\r\\n\\x1b]0;t\\x07"


# ---- the installation's hash key -----------------------------------------------------------------

def test_key_is_made_once_private_and_reused(tmp_path):
    path = tmp_path / ".oisp-hash.key"
    key = installation_key(path)
    assert len(key) == 64 and os.stat(path).st_mode & 0o777 == 0o600
    assert installation_key(path) == key


def test_key_beside_the_first_file_output_else_the_state_directory(tmp_path, monkeypatch):
    assert key_path([None, tmp_path / "out" / "x.jsonl"]) == tmp_path / "out" / ".oisp-hash.key"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert key_path([None]) == tmp_path / "state" / "oisp-sensor" / "hash.key"
    cfg = AnalyzerConfig()
    resolve_hash_key(cfg, [None])
    assert cfg.hash_key and os.stat(tmp_path / "state" / "oisp-sensor").st_mode & 0o777 == 0o700
    configured = AnalyzerConfig(hash_key=b"k" * 16)
    resolve_hash_key(configured, [tmp_path / "x.jsonl"])
    assert configured.hash_key == b"k" * 16 and not (tmp_path / ".oisp-hash.key").exists()


def test_unsafe_key_files_are_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("k" * 64)
    target.chmod(0o600)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    with pytest.raises(AnalyzerConfigError, match="symbolic link"):
        installation_key(link)
    target.chmod(0o644)
    with pytest.raises(AnalyzerConfigError, match="mode 644, not 600"):
        installation_key(target)
    (tmp_path / "dir.key").mkdir()
    with pytest.raises(AnalyzerConfigError, match="not a regular file"):
        installation_key(tmp_path / "dir.key")
    if os.geteuid() == 0:
        os.chown(target, 12345, -1)
        target.chmod(0o600)
        with pytest.raises(AnalyzerConfigError, match="owned by uid 12345"):
            installation_key(target)


def test_cli_makes_the_key_beside_its_output_and_refuses_a_link(tmp_path):
    segments = FIXTURES / "segments" / "sdk"
    out = tmp_path / "events.jsonl"
    cmd = [str(BIN / "oisp-analyze"), str(segments), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    first = out.read_bytes()
    assert (tmp_path / ".oisp-hash.key").stat().st_mode & 0o777 == 0o600
    subprocess.run(cmd, check=True, capture_output=True)
    assert out.read_bytes() == first  # the same key the next time: the same hashes
    (tmp_path / ".oisp-hash.key").unlink()
    (tmp_path / ".oisp-hash.key").symlink_to(tmp_path / "events.jsonl")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    key = tmp_path / ".oisp-hash.key"
    assert proc.stderr == f"oisp-analyze: refusing the hash key file {key}: it is a symbolic link\n"


def test_invisible_format_characters_are_escaped_for_the_terminal():
    from analyzer.http.redaction import for_terminal

    # a bidi override and an isolate reorder what a terminal shows; zero-width characters hide text
    shown = for_terminal("a\u202eb\u2066c\u200bd\u2028e\ufefff")
    assert shown == "a\\u202eb\\u2066c\\u200bd\\u2028e\\ufefff"
    assert for_terminal("caf\u00e9 \u4e2d") == "caf\u00e9 \u4e2d"  # printable text stays as it is


def test_the_prefilters_change_nothing():
    """_redact_text skips the patterns that cannot match: on strings built to come close to every
    pattern (names, separators, prefixes, case, percent escapes, "tokens" joining a word), it equals
    running every pattern (_redact_patterns)."""
    import random

    from analyzer.http.redaction import _redact_patterns, _redact_text, redact_text

    pieces = ["key", "KEY", "Key", "tok", "ens", "tokens", "token", "secret", "_access_", "auth", "cookie",
              "sessio", "n", "passw", "credential", "sig", "x-amz-", "content-sha256", "%6Bey", "%", "6B",
              "=", ":", "://", "@", '"', "\n", "\r\n", " ", "\t", "&", "?", ";", "#", "-", "_", ".", "/", "+",
              "sk-", "sk_", "gsk_", "xai-", "hf_", "r8_", "glpat-", "AIza", "AKIA", "ASIA", "ghp_", "gho_",
              "github_pat_", "eyJ", "xoxb-", "Bearer ", "bearer\t", "BEARER", "abcdefgh", "ABCDEFGHIJKLMNOP",
              "0123456789", "tokensy", "ke", "=tokens", "tokens:", '"tokens',
              "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "https", "user", "x", "ſ", "K", "é"]
    rng = random.Random(7)
    checked = changed = 0
    for i in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        if i % 50 == 0:  # long text is searched otherwise
            text = text + " " * 4100 + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        expected = _redact_patterns(text)
        assert _redact_text(text) == expected, text
        assert redact_text(text) == expected, text  # its prefilters (short text: a sharper one) and cache
        checked += 1
        changed += expected != text
    assert changed > checked // 10  # the strings do hold secrets, not only near misses


def _reference_walk(value, keep, path=()):
    """The walk as first written: a fresh copy of every container, every string through redact_text unless
    keep(path), floats as JsonFloat, tuples as lists."""
    from analyzer.http.redaction import redact_text
    from analyzer.json_text import JsonFloat

    if isinstance(value, str):
        return value if keep(path) else redact_text(value)
    if isinstance(value, dict):
        return {k: _reference_walk(v, keep, (*path, k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reference_walk(v, keep, (*path, i)) for i, v in enumerate(value)]
    return JsonFloat(value) if isinstance(value, float) else value


def test_the_walks_equal_a_plain_copying_walk_and_never_change_their_input():
    """redact_tree and redact_event return containers in which nothing changed as they are: on seeded
    trees of secrets and near misses, in every place of an event, they give what a walk copying every
    node gives (types included), and the tree handed in is left as it was."""
    import copy
    import random

    from analyzer.http.redaction import _content_path, redact_tree

    rng = random.Random(11)
    texts = ["gpt-4o", "sk-proj-0123456789abcdef", "Bearer abcdefghijk", "https://u:p@h/x?key=abc", "ok",
             "authorization: sk-ant-0123456789", "é sk-0123456789ab", "x" * 300,
             "x" * 300 + " AKIA0123456789ABCD"]
    leaves = [None, True, 3, 2**70, 1.5e-07, float("nan"), *texts]

    def tree(depth):
        r = rng.random()
        if depth > 3 or r < 0.3:
            return rng.choice(leaves)
        if r < 0.55:
            return [tree(depth + 1) for _ in range(rng.randint(0, 4))]
        if r < 0.6:
            return tuple(tree(depth + 1) for _ in range(rng.randint(0, 3)))
        keys = ["messages", "content", "choices", "message", "tool_calls", "arguments", "model", "a", 7]
        return {rng.choice(keys): tree(depth + 1) for _ in range(rng.randint(0, 5))}

    def same(a, b):
        assert type(a) is type(b), (a, b)
        if isinstance(a, dict):
            assert list(a) == list(b)
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, list):
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                same(x, y)
        else:
            assert a == b or a != a and b != b

    changed = 0
    for _ in range(3000):
        event = {"data": tree(0), "process": tree(1), "ts": rng.choice(texts)}
        before = copy.deepcopy(event)
        for content in ("full", "hash"):
            keep = _content_path if content == "full" else (lambda path: False)
            expected = _reference_walk(event, keep)
            same(redact_event(event, content), expected)
            same(redact_tree(event), _reference_walk(event, lambda path: False))
            changed += expected != event
        same(event, before)
    assert changed > 1000


def test_strings_holding_a_credential_are_not_kept():
    """redact_text and redact_url keep short strings they leave as they are (a bound cache), never one that
    held a credential: redacted anew each time, the same way, and not held beyond its use."""
    from analyzer.http import redaction

    secrets = ["sk-proj-0123456789abcdefgh", "Bearer abcdefghijklmnop", "https://u:p@h/x",
               "authorization: sk-ant-0123456789", '{"api_key": "abcdefgh"}']
    urls = ["/v1/models?key=AIzaSyA0123456789abcdef", "https://u:p@h/x", "/v1/x?token=abc"]
    plain = ["gpt-4o", "/v1/chat/completions", "hello there"]
    for _ in range(2):
        assert [redaction.redact_text(s) for s in secrets] == [redaction._redact_text(s) for s in secrets]
        assert all(redaction.REDACTED in redaction.redact_text(s) for s in secrets)
        assert all(redaction.REDACTED in redaction.redact_url(u) for u in urls)
        assert [redaction.redact_text(s) for s in plain] == plain
        assert [redaction.redact_url(u) for u in plain[1:2]] == plain[1:2]
    assert not set(secrets) & set(redaction._cache) and not set(urls) & set(redaction._urls)
    assert set(plain) <= set(redaction._cache) and plain[1] in redaction._urls
