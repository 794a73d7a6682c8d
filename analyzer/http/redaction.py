"""Secrets never leave the analyzer: the one redaction pass over everything it emits (events, exchange
records, DuckDB rows, OTLP, the summary on the terminal, log lines that quote captured text).

- header names by pattern (`is_secret_name`): key, token, secret, auth, cookie, session, password,
  credential, signature, plus the AWS headers listed;
- URLs and query strings (`redact_url`): userinfo always, parameters with a secret name;
- command lines as arguments (`redact_cmdline`): `--opt=value`, `-Hvalue`, the value after a secret
  option, header arguments, URLs;
- key-shaped strings anywhere in text (`redact_text`): OpenAI, Anthropic, Google, AWS, GitHub, Slack,
  JWTs, `Bearer <token>`;
- a walk over an event (`redact_event`) that redacts every string, except the OISP content fields
  when the content is kept as captured (`--content full`).

The walks are the last pass over every tree written as JSON: they also turn each float into a JsonFloat,
which the JSON writers give json's float text (analyzer/json_text.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import unquote

from analyzer.bounded_dict import BoundedDict
from analyzer.http.secret_scan import may_hold_secret
from analyzer.json_text import JsonFloat

REDACTED = "[redacted]"
# headers whose names say nothing by pattern but carry credentials (kept from the first list; the
# content hash is redacted too, as it always was: a hash of a short body can be guessed)
AWS_HEADERS = {"x-amz-security-token", "x-amz-content-sha256", "x-amz-credential", "x-amz-signature"}
_SECRET_WORD = re.compile(r"key|token|secret|auth|cookie|session|passw|credential|signature", re.I)
# "tokens" names a count (max_tokens, x-ratelimit-remaining-tokens), not a credential
_COUNT_WORD = re.compile(r"tokens", re.I)


def is_secret_name(name: str) -> bool:
    """A header, query parameter, option or field name that says its value is a credential."""
    # names repeat from message to message (host, content-type, authorization): short ones are remembered
    return _known_name(name) if len(name) <= 64 else _secret_name(name)


def _secret_name(name: str) -> bool:
    low = name.lower()
    return low in AWS_HEADERS or low == "sig" or bool(_SECRET_WORD.search(_COUNT_WORD.sub("", low)))


_known_name = lru_cache(maxsize=4096)(_secret_name)


# ---- key-shaped strings -------------------------------------------------------------------------------
_B = r"(?<![A-Za-z0-9_])"  # not in the middle of a word: "task-..." holds no "sk-" key
_KEY_SHAPES = re.compile(
    _B + r"(?:sk-|sk_|xai-|gsk_|hf_|r8_|glpat-)[A-Za-z0-9_\-]{8,}"  # OpenAI (sk-proj-), Anthropic, ...
    r"|" + _B + r"AIza[A-Za-z0-9_\-]{8,}"  # Google
    r"|" + _B + r"(?:AKIA|ASIA)[A-Z0-9]{12,}"  # AWS access key ids
    r"|" + _B + r"(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{8,}|" + _B + r"github_pat_[A-Za-z0-9_]{8,}"  # GitHub
    r"|" + _B + r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*)?"  # JWT (and its head)
    r"|" + _B + r"eyJ[A-Za-z0-9_\-]{8,}"
    r"|" + _B + r"xox[a-z]-[A-Za-z0-9\-]{8,}")  # Slack
_BEARER = re.compile(r"\b(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}", re.I)
_AWS_SECRET = re.compile(r"(secret_?access_?key[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+=]{30,}", re.I)
# URLs with userinfo: scheme://user:pass@host
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@?#\"'<>]+@")
# name=value: in a query string or a form body (after ? & ; # or at the start of a line or word)
_PARAM = re.compile(r"(?:^|(?<=[?&;#\s]))([A-Za-z0-9_.%\-\[\]]+)=([^&#\s\"'<>]*)", re.M)
# "Name: value" header lines (HTTP/1 heads in the summary, text that quotes a request)
_HEADER_LINE = re.compile(r"^([A-Za-z0-9_\-]+)[ \t]*:[ \t]*([^\r\n]*)", re.M)
# "name": "value" in JSON text whose name says credential
_JSON_FIELD = re.compile(r"(\"([A-Za-z0-9_.\-]+)\"\s*:\s*\")((?:[^\"\\]|\\.)*)\"")


def _param(m: re.Match) -> str:
    return f"{m.group(1)}={REDACTED}" if m.group(2) and is_secret_name(unquote(m.group(1))) else m.group(0)


def _header_line(m: re.Match) -> str:
    return f"{m.group(1)}: {REDACTED}" if m.group(2) and is_secret_name(m.group(1)) else m.group(0)


def _json_field(m: re.Match) -> str:
    return f"{m.group(1)}{REDACTED}\"" if m.group(3) and is_secret_name(m.group(2)) else m.group(0)


# Short strings repeat from event to event (models, paths, header values): those redaction leaves as they
# are are kept, up to 65,536 of them (then forgotten all at once: a bound, not a policy). One that holds
# a credential is redacted anew each time: the analyzer does not keep it beyond its use.
_CACHED_LENGTH = 256
_cache: BoundedDict = BoundedDict(1 << 16)
_cache_get = _cache.get


def redact_text(text: str) -> str:
    """Text with every credential it visibly holds replaced by the marker."""
    if len(text) > _CACHED_LENGTH:
        # one RE2 scan says whether a pattern could change it (analyzer/http/secret_scan.py): real prompts
        # and bodies are long, and Python's alternations cost several ns a character each
        return _redact_text(text) if may_hold_secret(text) else text
    done = _cache.get(text)
    if done is None:
        done = _redact_text(text) if _MAYBE_SECRET_SHORT.search(text) else text
        if done == text:
            _cache.keep(text, done)
    return done


# What each pattern needs in ASCII text to change it (str.lower() and re.I agree on ASCII, not beyond:
# re.I matches "ſ" to "s"), so that a pattern that cannot match is not run, and most strings run none:
# a key prefix of _KEY_SHAPES; a word that is_secret_name needs in a name (_NAME_WORDS, found as it finds
# them: "tokens" removed first; the AWS headers hold "x-amz"), or a "%" that unquote may turn into one,
# for the patterns that redact only under a secret name. A substitution only puts "[redacted]" where a
# value was, which holds none of these, so what the original text lacks no later pattern finds.
_KEY_PREFIXES = ("sk-", "sk_", "xai-", "hf_", "r8_", "glpat-", "AIza", "AKIA", "ASIA", "ghp_", "gho_",
                 "ghs_", "ghu_", "ghr_", "github_pat_", "eyJ", "xox")
_NAME_WORDS = ("key", "token", "secret", "auth", "cookie", "session", "passw", "credential", "sig", "x-amz")
# each list as one search in short text (`any(w in text for w in ...)` paid a generator step a word); long
# text is searched word by word (str's search skips ahead, the alternation tries each position)
_KEY_PREFIX = re.compile("|".join(map(re.escape, _KEY_PREFIXES)))
_NAME_WORD = re.compile("|".join(map(re.escape, _NAME_WORDS)))
# What one of the patterns needs somewhere in a short text (longer text is scanned by secret_scan instead;
# one scan of each alternative is cheap over a few dozen characters, a call to RE2 is not): = or : (the
# name=value, URL, header and JSON forms), a key prefix as _KEY_SHAPES writes it (case-sensitive), "bearer"
# in any case (no character beyond ASCII matches one of its letters under re.I). Ids and names with _ or -
# in them (req_..., a connection's pid-..., chatcmpl-..., gpt-4o-mini) hold none of these, and are not run
# through the patterns.
_MAYBE_SECRET_SHORT = re.compile("|".join(["[=:]", *map(re.escape, _KEY_PREFIXES),
                                            "[bB][eE][aA][rR][eE][rR]"]))
_SHORT = 4096


def _holds(text: str, pattern: re.Pattern, words: tuple[str, ...]) -> bool:
    """Whether the text holds one of the words (`pattern`: their alternation)."""
    return pattern.search(text) is not None if len(text) < _SHORT else any(w in text for w in words)


def _redact_text(text: str) -> str:
    if not text.isascii():
        return _redact_patterns(text)
    low = text.lower()
    if "=" in text or ":" in text:  # the patterns that redact only under a secret name need one of these
        # a name is delimited by characters that are not letters, so each "tokens" of the text is wholly in
        # one or outside it: removed from the whole text, a name's words (less its "tokens") are all there
        words = low.replace("tokens", "") if "tokens" in low else low
        named = "%" in text or _holds(words, _NAME_WORD, _NAME_WORDS)
        if "secret" in low:
            text = _AWS_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
        if named and "=" in text:
            text = _PARAM.sub(_param, text)
        if "@" in text and "://" in text:
            text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
        if named and ":" in text:
            text = _HEADER_LINE.sub(_header_line, text)
            if '"' in text:
                text = _JSON_FIELD.sub(_json_field, text)
    if "bearer" in low:
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    if _holds(text, _KEY_PREFIX, _KEY_PREFIXES):
        text = _KEY_SHAPES.sub(REDACTED, text)
    return text


def _redact_patterns(text: str) -> str:
    """Every pattern, unfiltered: for text beyond ASCII (and the reference _redact_text must equal)."""
    if "=" in text or ":" in text:
        text = _AWS_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
        text = _PARAM.sub(_param, text)
        text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
        text = _HEADER_LINE.sub(_header_line, text)
        if '"' in text:
            text = _JSON_FIELD.sub(_json_field, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _KEY_SHAPES.sub(REDACTED, text)


def redact_url(url: str | None) -> str | None:
    """A URL or request target: userinfo and secret query parameters replaced, key-shaped strings too."""
    if url is None:
        return None
    # request targets repeat from exchange to exchange: short ones without a credential are remembered
    done = _urls.get(url)
    if done is None:
        done = _redact_url(url)
        if done == url and len(url) <= _CACHED_LENGTH:
            _urls.keep(url, done)
    return done


def _redact_url(url: str) -> str:
    url = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", url)
    return _KEY_SHAPES.sub(REDACTED, _PARAM.sub(_param, url))


_urls: BoundedDict = BoundedDict(4096)


redact_path = redact_url  # the request target of an exchange


def redact_authority(authority: str | None) -> str | None:
    """Host[:port], without a userinfo part (HTTP/2's :authority may carry one)."""
    if authority is None or "@" not in authority:
        return authority
    return REDACTED + "@" + authority.rpartition("@")[2]


def redact_header(name: str, value: str) -> str:
    return REDACTED if is_secret_name(name) else redact_text(value)


def redact_headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    """Headers as [name, value] pairs: secret-bearing ones (by name) replaced by the marker, the
    others cleared of key-shaped strings."""
    return [[k, redact_header(k, v)] for k, v in headers]


# ---- command lines ---------------------------------------------------------------------------------
# curl/wget/httpie options whose value is a header, or a credential whatever the option is called
_HEADER_OPTS = ("--header", "--proxy-header", "-H")
_CREDENTIAL_OPTS = {"-u", "--user", "-U", "--proxy-user", "--oauth2-bearer", "-E", "--cert", "--pass",
                    "--aws-sigv4", "--auth"}
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-]*)=")
_HEADER_ARG = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*:(?!//)(.*)", re.S)


def _header_arg(arg: str) -> str:
    m = _HEADER_ARG.match(arg)
    if m and is_secret_name(m.group(1)):
        return f"{m.group(1)}: {REDACTED}"
    return redact_text(arg)


def _option(arg: str) -> tuple[str, bool]:
    """One argument starting with '-' (never a value): its redacted form, and whether the next
    argument is its (secret) value."""
    name, eq, value = arg.partition("=")
    if eq and name.startswith("--"):
        if name in _HEADER_OPTS:
            return f"{name}={_header_arg(value)}", False
        secret = name in _CREDENTIAL_OPTS or is_secret_name(name)
        return f"{name}={REDACTED if secret else redact_text(value)}", False
    if not arg.startswith("--") and len(arg) > 2:  # a short option with its value attached: -HAuth: x
        short, attached = arg[:2], arg[2:]
        if short == "-H":
            return short + _header_arg(attached), False
        if short in _CREDENTIAL_OPTS:
            return short + REDACTED, False
    return redact_text(arg), arg in _CREDENTIAL_OPTS or is_secret_name(arg)


def redact_cmdline(args: list[str] | tuple[str, ...]) -> list[str]:
    """A command line's arguments with the credentials it carries replaced by the marker."""
    out: list[str] = []
    after = ""  # the option this argument is the value of
    for arg in args:
        if after in _HEADER_OPTS:
            out.append(_header_arg(arg))
            after = ""
        elif after:
            out.append(REDACTED)
            after = ""
        elif arg.startswith("-") and arg != "-":
            redacted, takes_value = _option(arg)
            out.append(redacted)
            after = arg if arg in _HEADER_OPTS else "secret" if takes_value else ""
        elif (m := _ASSIGNMENT.match(arg)) and is_secret_name(m.group(1)):
            out.append(f"{m.group(1)}={REDACTED}")  # OPENAI_API_KEY=..., httpie's api_key==...
        else:
            out.append(_header_arg(arg))
    return out


# ---- events ------------------------------------------------------------------------------------------
def _content_path(path: tuple) -> bool:
    """The OISP fields that hold content (prompts, completions, tool arguments): what --content
    hash/none would hash or drop."""
    if len(path) < 3 or path[0] != "data":
        return False
    tail = tuple(p for p in path[1:] if not isinstance(p, int))
    return tail in {("messages", "content"), ("choices", "message", "content"), ("tool_calls", "arguments")}


def redact_tree(value, keep: Callable[[tuple], bool] | None = None, path: tuple = ()):
    """A copy of a JSON-like value with every string redacted (redact_text), except where keep(path)."""
    if keep is None:
        return _redact_all(value)
    if isinstance(value, str):
        return value if keep(path) else redact_text(value)
    if isinstance(value, dict):
        return {k: redact_tree(v, keep, (*path, k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v, keep, (*path, i)) for i, v in enumerate(value)]
    return JsonFloat(value) if isinstance(value, float) else value


_CONTENT_TAILS = {("messages", "content"), ("choices", "message", "content"), ("tool_calls", "arguments")}


# leaves written as they are (a float is made a JsonFloat)
_LEAVES = frozenset({int, bool, type(None), JsonFloat})


def _redact_all(value):
    """redact_tree without exceptions: no path to build at each node; the common types are told apart
    by identity (the walk runs over every node of every event and exchange). A dict or list in which
    nothing changes is returned as it is, not copied (most are: copying them was a third of the walk);
    one that changes is copied on its first change, so the value handed in is never modified."""
    kind = type(value)
    if kind is str:
        return redact_text(value)
    if kind is dict or kind is list:
        out = None
        for k, v in value.items() if kind is dict else enumerate(value):
            t = type(v)
            if t is str:  # a short string seen before is the cache's, without a call
                done = _cache_get(v)
                if done is None:
                    done = redact_text(v)
            elif t in _LEAVES:
                continue
            else:
                done = _redact_all(v)
            if done is not v and (t is not str or done != v):
                if out is None:
                    out = kind(value)
                out[k] = done
        return value if out is None else out
    if kind in _LEAVES:
        return value
    if isinstance(value, float):
        return JsonFloat(value)
    if isinstance(value, str):  # subclasses
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # a tuple is written as a list: its strings are text too
        return [_redact_all(v) for v in value]
    return value


# the content paths as a tree of keys below "data" (list indices skipped): where a key leads, and _KEEP at
# a content field; a key that leads nowhere holds no content below it (_redact_data redacts it whole)
_KEEP: dict = {}
_CONTENT_TREE: dict = {}
for _tail in _CONTENT_TAILS:
    _node = _CONTENT_TREE
    for _key in _tail[:-1]:
        _node = _node.setdefault(_key, {})
    _node[_tail[-1]] = _KEEP


def _redact_data(value, node: dict):
    """The event's data with content kept: `node` is where its path below "data" (less list indices, as
    _content_path reads it) stands in _CONTENT_TREE; a subtree no content field lies under is redacted
    whole (_redact_all). Returned as it is where nothing changes, as _redact_all does."""
    kind = type(value)
    if kind is str:
        return value if node is _KEEP else redact_text(value)
    if kind is not dict and not isinstance(value, dict):
        if isinstance(value, str):
            return value if node is _KEEP else redact_text(value)
        if isinstance(value, (list, tuple)):
            return [_redact_data(v, node) for v in value]
        return JsonFloat(value) if isinstance(value, float) else value
    out = None
    for k, v in value.items():
        if type(k) is str:
            child = node.get(k)
        else:  # a list index as a key: the path reads on without it
            child = node if isinstance(k, int) else None
        if child is None:
            if type(v) is str:  # a short string seen before is the cache's, without a call
                done = _cache_get(v)
                if done is None:
                    done = redact_text(v)
            else:
                done = _redact_all(v)
        else:
            done = _redact_data(v, child)
        if done is not v and (type(v) is not str or done != v):
            if out is None:
                out = dict(value)
            out[k] = done
    return value if out is None else out


def redact_event(event: dict, content: str) -> dict:
    """An event with every string redacted, the content fields excepted with content "full" (the same
    as redact_tree(event, _content_path), walked without building each node's path)."""
    if content != "full" or not isinstance(event, dict):
        return _redact_all(event) if content != "full" else redact_tree(event, _content_path)
    return {k: _redact_data(v, _CONTENT_TREE) if k == "data" else _redact_all(v) for k, v in event.items()}


# ---- terminal ---------------------------------------------------------------------------------------
# C0, DEL, C1, and the invisible format characters that reorder or hide text on a terminal (bidi
# overrides and isolates, zero-width characters, line and paragraph separators)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\\": "\\\\"}


def escape_controls(text: str) -> str:
    """Control and invisible format characters made visible: a terminal shows them, never obeys them. A
    backslash is doubled, so that the escapes cannot be mistaken for captured text."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(0), _escape(ord(m.group(0)))), text)


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """Captured text fit to print: redacted, then its control characters escaped."""
    return escape_controls(redact_text(text))
