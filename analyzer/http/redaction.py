"""Secrets never leave the analyzer: header values, query parameters and command-line arguments that
carry credentials are replaced by a marker wherever exchanges, events or tables show them."""

from __future__ import annotations

import re

SECRET_HEADERS = {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key",
                  "cookie", "set-cookie", "x-amz-security-token", "x-amz-content-sha256"}
REDACTED = "[redacted]"
# query parameters that carry credentials (Gemini's ?key=, OAuth tokens)
QUERY_SECRET = re.compile(r"([?&](?:key|api_key|api-key|access_token|token|sig|signature|x-amz-signature|"
                          r"x-amz-credential|x-amz-security-token)=)[^&]*", re.I)


def redact_path(path: str | None) -> str | None:
    return None if path is None else QUERY_SECRET.sub(r"\1" + REDACTED, path)


def redact_headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    """Headers as [name, value] pairs, the values of secret-bearing ones replaced by the marker."""
    return [[k, REDACTED if k in SECRET_HEADERS else v] for k, v in headers]


# Command lines carry secrets too (`--api-key sk-...`, `OPENAI_API_KEY=...`, curl's
# `-H "Authorization: Bearer ..."`): by option name, by header name, and by the shape of well-known
# key formats anywhere in an argument.
SECRET_NAME = re.compile(r"key|token|secret|passw|auth|credential", re.I)
SECRET_VALUE = re.compile(r"(?:sk-|sk_|xai-|gsk_|hf_|r8_|AKIA|ASIA|AIza|ghp_|glpat-|eyJ)[A-Za-z0-9_\-.]{8,}")
SECRET_HEADER_ARG = re.compile(r"^\s*(authorization|proxy-authorization|x-api-key|api-key|x-goog-api-key"
                               r"|cookie|x-amz-security-token)\s*:.*", re.I | re.S)


def redact_cmdline(args: list[str] | tuple[str, ...]) -> list[str]:
    out: list[str] = []
    value_next = False
    for arg in args:
        name, eq, _ = arg.partition("=")
        if value_next:
            out.append(REDACTED)
            value_next = False
        elif eq and SECRET_NAME.search(name) and not name.startswith("-H"):
            out.append(f"{name}={REDACTED}")
        elif SECRET_HEADER_ARG.match(arg):
            out.append(SECRET_HEADER_ARG.sub(lambda m: f"{m.group(1)}: {REDACTED}", arg))
        else:
            out.append(SECRET_VALUE.sub(REDACTED, arg))
            value_next = arg.startswith("-") and not eq and bool(SECRET_NAME.search(arg))
    return out
