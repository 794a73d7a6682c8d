"""Matching a run's AI events to the calls its clients made: each call's prompt starts with a marker
such as "[go-h2-chat]"."""

from __future__ import annotations


def marker_of(event: dict) -> str | None:
    for m in event["data"].get("messages") or []:
        content = m.get("content") or ""
        if content.startswith("[") and "]" in content:
            return content[:content.index("]") + 1]
    return None


def pairs(events: list[dict]) -> dict[str, tuple[dict, dict | None]]:
    """marker (else request type) -> (request event, its response event or None); a key twice fails."""
    responses = {e["data"]["request_id"]: e for e in events if e["event_type"] == "ai.response"}
    out = {}
    for e in events:
        if e["event_type"] == "ai.request":
            key = marker_of(e) or e["data"].get("request_type")
            assert key not in out, f"two requests for {key}"
            out[key] = (e, responses.get(e["data"]["request_id"]))
    return out
