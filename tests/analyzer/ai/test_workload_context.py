"""The workload fields of format-5 process rows reach the events (host.k8s, host.container.image), the
OTLP resource (the conventions' k8s.KIND.name, container.image.*, k8s.pod.label.*) and stay valid OISP."""

from __future__ import annotations

import json
from dataclasses import replace

from analyzer.ai.context import host_context
from analyzer.ai.events import EventOptions
from analyzer.ai.exchange_events import exchange_events
from analyzer.ai.schema import validation_errors
from analyzer.sinks.otel_mapping import workload_resource
from contract.identity import ProcessIdentity
from helpers.exchanges import REG, exchange

IDENTITY = ProcessIdentity(
    container_id="ab" * 32, container_runtime="containerd", pod_uid="8d2f6c1e-4b3a-4f5e-9d8c-7b6a5f4e3d2c",
    pod_name="chat-api-7d9f8b6c5-x2k4p", pod_namespace="ml", container_name="app", service_account="chat-api",
    workload_kind="Deployment", workload_name="chat-api",
    container_image="registry.local:5000/chat-api:2.4.1",
    pod_labels=json.dumps({"app.kubernetes.io/name": "chat-api", "team": "ml"}))


def an_event():
    x = exchange("api.openai.com", "/v1/chat/completions",
                 {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                 json.dumps({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "message": {
                     "role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}}).encode())
    x.connection.process = IDENTITY
    return exchange_events(x, REG, EventOptions())[0]


def test_events_name_the_workload_service_account_image_and_labels():
    ev = an_event()
    k8s = ev["host"]["k8s"]
    assert (k8s["workload_kind"], k8s["workload_name"], k8s["deployment"], k8s["service_account"]) == \
        ("Deployment", "chat-api", "chat-api", "chat-api")
    assert k8s["labels"] == {"app.kubernetes.io/name": "chat-api", "team": "ml"}
    assert ev["host"]["container"]["image"] == "registry.local:5000/chat-api:2.4.1"
    assert validation_errors(ev) == []


def test_only_a_deployment_fills_the_oisp_deployment_field():
    for kind in ("CronJob", "StatefulSet", "Pod"):
        x = exchange("api.openai.com", "/v1/models", {}, b"{}")
        x.connection.process = replace(IDENTITY, workload_kind=kind, workload_name="w")
        k8s = host_context(x.connection)["k8s"]
        assert "deployment" not in k8s and (k8s["workload_kind"], k8s["workload_name"]) == (kind, "w")


def test_labels_that_are_not_a_json_object_are_left_out():
    x = exchange("api.openai.com", "/v1/models", {}, b"{}")
    for bad in ("not json", "[1, 2]", '{"a": 1}'):
        x.connection.process = replace(IDENTITY, pod_labels=bad)
        assert "labels" not in host_context(x.connection)["k8s"]


def test_otlp_resource_attributes():
    r = workload_resource(an_event())
    assert r["k8s.deployment.name"] == "chat-api" and r["k8s.serviceaccount.name"] == "chat-api"
    assert (r["container.image.name"], r["container.image.tag"]) == ("registry.local:5000/chat-api", "2.4.1")
    assert r["k8s.pod.label.team"] == "ml" and r["k8s.namespace.name"] == "ml"


def test_contexts_derived_from_kept_values_equal_deriving_them_anew():
    """process_context and host_context keep what they derive from a process's identity (its redacted
    command line, its labels): the events' dicts equal deriving it each time, are new objects for each
    event, and a command line or label text beyond _KEPT_CHARS is derived anew, not kept."""
    import random

    from analyzer.ai import context
    from analyzer.http.redaction import redact_cmdline
    from analyzer.model import ConnectionInfo

    rng = random.Random(9)
    words = ["python3", "-m", "uvicorn", "--api-key", "sk-proj-0123456789abcdef", "-H",
             "Authorization: Bearer x", "OPENAI_API_KEY=sk-0123456789abcd", "--port", "8080",
             "https://u:p@h/x?key=abc", "é"]
    labels = ['{"app":"chat","team":"ml"}', '{"a":1}', "not json", "[1]", '{"x":"' + "y" * 9000 + '"}']
    context._redacted_cmdline.cache_clear()
    context._label_items.cache_clear()
    short = set()
    for _ in range(500):
        cmdline = tuple(rng.choice(words) for _ in range(rng.randint(1, 8)))
        if rng.random() < 0.05:
            cmdline += ("z" * (context._KEPT_CHARS + 1),)
        else:
            short.add(cmdline)
        text = rng.choice(labels)
        p = ProcessIdentity(cmdline=cmdline, pod_uid="u", pod_labels=text, container_id="c")
        c = ConnectionInfo("n", "c1", 1, 2, "python3", 0, 0, "/lib", process=p)
        first, second = context.process_context(c), context.process_context(c)
        args = redact_cmdline(cmdline)
        assert first["cmdline_args"] == args and first["cmdline"] == " ".join(args)
        assert first == second and first["cmdline_args"] is not second["cmdline_args"]
        parsed = json.loads(text) if text.startswith("{") else None
        expected = {k: v for k, v in parsed.items() if isinstance(v, str)} or None if parsed else None
        host = context.host_context(c)
        assert host["k8s"].get("labels") == expected
        if expected:
            assert host["k8s"]["labels"] is not context.host_context(c)["k8s"]["labels"]
    # what was kept: each short command line and label text once, nothing beyond _KEPT_CHARS
    assert context._redacted_cmdline.cache_info().currsize == len(short)
    assert context._label_items.cache_info().currsize == len(labels) - 1
