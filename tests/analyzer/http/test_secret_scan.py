"""secret_scan's RE2 patterns find something in every text a redaction pattern would change: a text they find
nothing in is not redacted at all (redaction.redact_text, long text). Held to the Python patterns' own text,
to every character Python's \\s and re.I treat specially, and to seeded texts built around each pattern."""

from __future__ import annotations

import random
import re
import sys

import pytest
import re2

from analyzer.http import redaction, secret_scan
from analyzer.http.redaction import REDACTED

# The Python patterns secret_scan.PATTERNS were written from. A change to one of them must be carried into
# its RE2 form (loosened as the module docstring says, never tightened), and then here.
WRITTEN_FROM = {
    "_AWS_SECRET": (r"(secret_?access_?key[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+=]{30,}", re.I),
    "_PARAM": (r"(?:^|(?<=[?&;#\s]))([A-Za-z0-9_.%\-\[\]]+)=([^&#\s\"'<>]*)", re.M),
    "_USERINFO": (r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@?#\"'<>]+@", 0),
    "_HEADER_LINE": (r"^([A-Za-z0-9_\-]+)[ \t]*:[ \t]*([^\r\n]*)", re.M),
    "_JSON_FIELD": (r"(\"([A-Za-z0-9_.\-]+)\"\s*:\s*\")((?:[^\"\\]|\\.)*)\"", 0),
    "_BEARER": (r"\b(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}", re.I),
    "_KEY_SHAPES": (redaction._B + r"(?:sk-|sk_|xai-|gsk_|hf_|r8_|glpat-)[A-Za-z0-9_\-]{8,}"
                    r"|" + redaction._B + r"AIza[A-Za-z0-9_\-]{8,}"
                    r"|" + redaction._B + r"(?:AKIA|ASIA)[A-Z0-9]{12,}"
                    r"|" + redaction._B + r"(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{8,}|" + redaction._B
                    + r"github_pat_[A-Za-z0-9_]{8,}"
                    r"|" + redaction._B + r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*)?"
                    r"|" + redaction._B + r"eyJ[A-Za-z0-9_\-]{8,}"
                    r"|" + redaction._B + r"xox[a-z]-[A-Za-z0-9\-]{8,}", 0),
}
# what each Python pattern's substitution puts in (redaction.py): a text it changes is one to be found
REPLACE = {
    "_AWS_SECRET": lambda m: m.group(1) + REDACTED,
    "_PARAM": redaction._param,
    "_USERINFO": lambda m: m.group(1) + REDACTED + "@",
    "_HEADER_LINE": redaction._header_line,
    "_JSON_FIELD": redaction._json_field,
    "_BEARER": lambda m: m.group(1) + REDACTED,
    "_KEY_SHAPES": REDACTED,
}
COMPILED = {name: re2.compile(p) for name, p in secret_scan.PATTERNS.items()}


@pytest.mark.parametrize("name", sorted(WRITTEN_FROM))
def test_the_python_patterns_are_the_ones_scanned_for(name):
    pattern, flags = WRITTEN_FROM[name]
    python = getattr(redaction, name)
    assert (python.pattern, python.flags & (re.I | re.M)) == (pattern, flags), \
        f"redaction.{name} changed: change secret_scan.PATTERNS[{name!r}] with it, then WRITTEN_FROM"
    assert set(secret_scan.PATTERNS) == set(WRITTEN_FROM) == set(REPLACE)


def _chars():
    return (chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)


def test_every_character_python_takes_for_space_or_an_ascii_letter_is_in_the_rε2_classes():
    space = re2.compile(secret_scan._S)
    spaces = [c for c in _chars() if re.fullmatch(r"\s", c)]
    assert len(spaces) == 29 and all(space.fullmatch(c) for c in spaces)
    # re.I: [A-Za-z] and the letters of the patterns' words, beyond ASCII
    folded = [c for c in _chars() if not c.isascii() and re.fullmatch(r"(?i)[a-z]", c)]
    assert folded == ["\u0130", "\u0131", "\u017f", "\u212a"]
    widened = re2.compile(f"[A-Za-z{secret_scan._I}]")
    assert all(widened.fullmatch(c) for c in folded)
    for word in ("secret_access_key", "bearer"):  # RE2's own folding covers what re.I adds to these letters
        for i, letter in enumerate(word):
            for c in folded:
                if re.fullmatch(f"(?i){letter}", c):
                    variant = word[:i] + c + word[i + 1:]
                    assert re2.compile(f"(?i:{word})").fullmatch(variant), variant


NAMES = ["key", "KEY", "Key", "api_key", "x-api-key", "ApiKey", "token", "tokens", "max_tokens",
         "access_token", "tokensecret", "sesstokension", "secret", "client_secret", "auth", "Authorization",
         "cookie", "session",
         "sessionid", "passw", "password", "credential", "signature", "sig", "SIG", "X-Amz-Security-Token",
         "x-amz-content-sha256", "x-amz-date", "%6Bey", "%4B%45%59", "%E2%84%AAey", "%73ecret", "a%", "page",
         "limit", "model", "name", "id", "content", "role", "q", "user_id", "monkey", "turkey"]
SPACES = [" ", "\t", "\n", "\r\n", "\v", "\f", "\x1c", "\x1f", "\x85", "\xa0", "\u1680", "\u2003", "\u2028",
          "\u2029", "\u202f", "\u3000"]
FOLDED = ["\u0130", "\u0131", "\u017f", "\u212a"]
VALUE_CHARS = "abcdefXYZ0189/+=._~-_" + "".join(FOLDED)
AWS_CHARS = "abXZ09/+=" + "".join(FOLDED) + "."  # the AWS secret's characters (and one that ends it)
PREFIXES = ["sk-", "sk_", "xai-", "gsk_", "hf_", "r8_", "glpat-", "AIza", "AKIA", "ASIA", "ghp_", "gho_",
            "ghs_",
            "ghu_", "ghr_", "github_pat_", "eyJ", "xoxb-", "xoxp-", "xox-", "task-", "eyj"]
JUNK = ["the ", "Hello, ", "wörld ", "“quoted” ", "{", "}", "[", "]", ", ", "é", "日本 ", "\U0001F600",
        "a", "Z",
        "0", "_", "-", ".", ":", "=", '"', "'", "/", "?", "&", "#", ";", "@", "%"]


def _value(rng: random.Random, low: int, high: int, chars: str = VALUE_CHARS) -> str:
    return "".join(rng.choice(chars) for _ in range(rng.randint(low, high)))


def _case(rng: random.Random, word: str) -> str:
    out = "".join(c.upper() if rng.random() < 0.3 else c for c in word)
    for plain, folded in (("s", "\u017f"), ("k", "\u212a"), ("i", "\u0130"), ("i", "\u0131")):
        if rng.random() < 0.1:
            out = out.replace(plain, folded, 1)
    return out


def _form(rng: random.Random) -> str:
    """Something near one pattern's shape, a secret or a near miss."""
    name = rng.choice(NAMES)
    space = rng.choice(SPACES)
    kind = rng.randrange(7)
    if kind == 0:  # name=value
        return rng.choice(["", "?", "&", ";", "#", "\n", *SPACES, "x", "-"]) + name + "=" + _value(rng, 0, 6)
    if kind == 1:  # header line
        gap = rng.choice(["", " ", "\t ", space])
        return "\n" + name + gap + ":" + rng.choice(["", " ", "\t"]) + _value(rng, 0, 6)
    if kind == 2:  # JSON field
        before, after = rng.choice(["", space]), rng.choice(["", space])
        return f'"{name}"' + before + ":" + after + '"' + _value(rng, 0, 6) + '"'
    if kind == 3:  # AWS secret
        key = _case(rng, rng.choice(["secret_access_key", "secretaccesskey", "secret_accesskey",
                                     "secret-access-key"]))
        return (key + rng.choice(["", '"', "'"]) + rng.choice(["", space]) + rng.choice("=:")
                + rng.choice(["", space])
                + rng.choice(["", '"']) + _value(rng, 25, 40, AWS_CHARS))
    if kind == 4:  # bearer
        return _case(rng, "bearer") + rng.choice([space, "", "  "]) + _value(rng, 5, 12)
    if kind == 5:  # key shapes
        return (rng.choice(["", " ", "a", "_", "-", ".", "é", "\n"]) + rng.choice(PREFIXES)
                + "".join(rng.choice("abcXYZ019_-.") for _ in range(rng.randint(3, 16))))
    userinfo = rng.choice(["user", "u:p", "a b", "a\u2003b", "x/y", ""])
    return (rng.choice(["https", "s3", "x", "1a", ""]) + "://" + userinfo
            + rng.choice(["@", "", "/@"]) + "host/path")


def _texts(seed: int, n: int, forms: float = 0.15):
    rng = random.Random(seed)
    for _ in range(n):
        parts = []
        while sum(map(len, parts)) < 300:  # long: the scan is what decides (redaction._CACHED_LENGTH)
            parts.append(_form(rng) if rng.random() < forms else rng.choice(JUNK))
        yield "".join(parts)


def test_each_pattern_is_found_wherever_its_python_pattern_would_change_the_text():
    changed = {name: 0 for name in WRITTEN_FROM}
    for text in _texts(11, 6000):
        for name, replace in REPLACE.items():
            if getattr(redaction, name).sub(replace, text) != text:
                changed[name] += 1
                assert COMPILED[name].search(text), (name, text)
    assert min(changed.values()) > 30, changed  # every pattern had texts to change


def test_long_text_is_redacted_as_every_pattern_would_and_clean_text_is_not_run_through_them(monkeypatch):
    scanned_clean = 0
    for text in _texts(12, 3000, forms=0.02):
        expected = redaction._redact_patterns(text)
        assert redaction.redact_text(text) == expected, text
        scanned_clean += not secret_scan.may_hold_secret(text)
    assert scanned_clean > 100  # the scan does leave texts alone
    prose = "Summarize the key points of this session's notes, then list the tokens used. " * 40
    assert secret_scan.may_hold_secret(prose) is False

    def refuse(text):
        raise AssertionError("clean long text went through the patterns")

    monkeypatch.setattr(redaction, "_redact_text", refuse)
    assert redaction.redact_text(prose) is prose
    monkeypatch.undo()
    assert "sk-proj-abcdefghijkl" not in redaction.redact_text(prose + " sk-proj-abcdefghijkl")


def test_text_that_is_not_utf8_goes_through_the_patterns():
    text = "x" * 300 + "\ud800" + " Authorization: Bearer abcdefghijklmnop"
    assert secret_scan.may_hold_secret(text) is True
    assert "abcdefghijklmnop" not in redaction.redact_text(text)
