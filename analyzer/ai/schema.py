"""Validate events against the OISP v0.1 JSON Schema carried in analyzer/oisp_spec: the envelope,
and `data` against the `$defs` entry of its event type (the spec's oneOf over permissive payloads
cannot pick one by itself)."""

from __future__ import annotations

import json
from functools import cache

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from analyzer.ai.providers import SPEC_DIR

SCHEMA_DIR = SPEC_DIR / "schema" / "v0.1"
DATA_DEFS = {"ai.request": "request", "ai.response": "response", "ai.streaming_chunk": "streaming_chunk",
             "ai.embedding": "embedding"}


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMA_DIR.rglob("*.schema.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@cache
def _validator(uri: str) -> Draft202012Validator:
    schema = _registry().contents(uri.split("#")[0])
    if "#" in uri:
        schema = {"$ref": uri}
    return Draft202012Validator(schema, registry=_registry(),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def validation_errors(event: dict) -> list[str]:
    """Every way the event breaks the schema ([] when it validates)."""
    base = "https://oisp.dev/schema/v0.1/"
    errors = [f"envelope: {e.json_path}: {e.message}"
              for e in _validator(base + "envelope.schema.json").iter_errors(event)]
    defn = DATA_DEFS.get(event.get("event_type"))
    if defn and "data" in event:
        v = _validator(f"{base}events/ai.schema.json#/$defs/{defn}")
        errors += [f"data: {e.json_path}: {e.message}" for e in v.iter_errors(event["data"])]
    return errors
