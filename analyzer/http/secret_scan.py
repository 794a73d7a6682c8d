"""Whether a text may hold what the redaction patterns (analyzer/http/redaction.py) would replace: one scan
of RE2 (google-re2), linear in the text, where Python's re tries each pattern's alternatives at every
character. A 28 KB chat request took 3 ms of redact_text (6 ms with one character beyond ASCII, which runs
every pattern), nearly all of it finding nothing; the scan takes 40-50 us. Text the scan finds nothing in
is left as it is; text it finds something in goes through the Python patterns, which decide as before.

So the scan must find something in every text a pattern would change: each RE2 pattern below is its Python
pattern, loosened where RE2 has no equivalent, never tightened, and narrowed only by the conditions under
which redaction changes anything (a name that says credential, for the name=value, header line and JSON
field forms). The loosenings:
- lookbehinds (RE2 has none) become the character before, or the start; `\\b` is dropped;
- `\\s` (any of the 29 characters str.isspace() names) becomes _S, which holds all of them;
- under re.I, Python matches four characters beyond ASCII to ASCII letters (İ ı to i, ſ to s, K to k);
  RE2's case folding has ſ and K but not İ or ı, so classes that re.I widens list all four (_I);
- a secret name (redaction.is_secret_name: one of its words, less "tokens"; an AWS header; "sig") holds
  one of _WORDS: removing "tokens" can only join words around a "token", which _WORDS has; a name with
  "%" may unquote to anything, and counts as secret here.
tests/analyzer/http/test_secret_scan.py holds the two to each other: the Python patterns' text (a change
there must be made here too), every whitespace and case-folded character, and seeded hostile texts.
"""

from __future__ import annotations

import re2

_S = r"[\t-\r\x1c-\x1f\x85\p{Z}]"  # every character Python's \s matches in str patterns (and a few more)
_I = r"\x{130}\x{131}\x{17f}\x{212a}"  # what re.I matches to an ASCII letter beyond ASCII
_WORDS = r"(?i:key|token|secret|auth|cookie|session|passw|credential|sig|x-amz)"
_NAME = r"[A-Za-z0-9_.%\-\[\]]"  # redaction._PARAM's name characters
_B = r"(?:^|[^A-Za-z0-9_])"  # redaction._B: not in the middle of a word

# name: (the Python pattern it stands for, in redaction.py; its RE2 form)
PATTERNS = {
    "_AWS_SECRET": rf"(?i:secret_?access_?key)[\"']?{_S}*[=:]{_S}*[\"']?[A-Za-z0-9/+={_I}]{{30,}}",
    "_PARAM": rf"(?:(?m:^)|[?&;#]|{_S}){_NAME}*(?:{_WORDS}|%){_NAME}*=",
    "_USERINFO": r"[A-Za-z][A-Za-z0-9+.\-]*://[^/@?#\"'<>]+@",
    "_HEADER_LINE": rf"(?m:^)[A-Za-z0-9_\-]*{_WORDS}[A-Za-z0-9_\-]*[ \t]*:",
    "_JSON_FIELD": rf"\"[A-Za-z0-9_.\-]*{_WORDS}[A-Za-z0-9_.\-]*\"{_S}*:{_S}*\"",
    "_BEARER": rf"(?i:bearer){_S}+[A-Za-z0-9._~+/=\-{_I}]{{8,}}",
    "_KEY_SHAPES": _B + r"(?:(?:sk-|sk_|xai-|gsk_|hf_|r8_|glpat-)[A-Za-z0-9_\-]{8,}"
                   r"|AIza[A-Za-z0-9_\-]{8,}"
                   r"|(?:AKIA|ASIA)[A-Z0-9]{12,}"
                   r"|(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{8,}|github_pat_[A-Za-z0-9_]{8,}"
                   r"|eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}"
                   r"|eyJ[A-Za-z0-9_\-]{8,}"
                   r"|xox[a-z]-[A-Za-z0-9\-]{8,})",
}
_ANY = re2.compile("|".join(f"(?:{p})" for p in PATTERNS.values()))


def may_hold_secret(text: str) -> bool:
    """False only when no redaction pattern can change the text (module docstring)."""
    try:
        return _ANY.search(text) is not None
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8, so not for RE2; the patterns decide
        return True
