"""OpenAI embeddings (`/v1/embeddings`), also spoken by most OpenAI-compatible servers."""

from __future__ import annotations

from analyzer.ai.calls import AiCall, Usage
from analyzer.ai.formats.json_shapes import int_at, list_at, str_at
from analyzer.ai.formats.openai_chat import parse_error


def parse_request(body: dict, call: AiCall, path: str = "") -> None:
    call.request_type = "embedding"
    call.model_requested = str_at(body, "model")
    inputs = body.get("input")
    call.parameters = {"input_count": len(inputs) if isinstance(inputs, list) else 1}
    if "dimensions" in body:
        call.parameters["dimensions"] = body["dimensions"]


def parse_response(body: dict, call: AiCall) -> None:
    if "error" in body:
        parse_error(body, call)
        return
    call.model_returned = str_at(body, "model")
    call.usage = Usage(prompt_tokens=int_at(body, "usage", "prompt_tokens"),
                       total_tokens=int_at(body, "usage", "total_tokens"))
    call.parameters["embeddings_returned"] = len(list_at(body, "data"))


def parse_stream(events: list[tuple[str, str]], call: AiCall) -> None:
    call.notes.append("embeddings do not stream")
