"""The audit sample (samples/audit/, recorded by scripts/record_audit_sample.py with the real recorder)
holds what the notebooks' charts need: several namespaces and workloads named by the kubelet, four or
more providers, streaming and not, errors and rate limits, tool calls, system prompts, a prompt with
fake personal data and a fake key, and incomplete exchanges of three kinds. The recording itself is
tested too: testbed/audit_sample.py under the real recorder."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from analyzer.reports.audit_input import open_audit
from conftest import REPO
from testbed import audit_sample
from testbed.audit_workload import FAKE_AWS_KEY, FAKE_EMAIL, KEY

SAMPLE = REPO / "samples" / "audit"


def calls_per_pod(audit) -> dict[str, int]:
    return dict(audit.sql("SELECT pod_name, count(*) FROM ai_calls GROUP BY ALL").fetchall())


def truth_per_pod(truth: list[dict]) -> dict[str, int]:
    return {t["pod"]: len(t["calls"]) for t in truth}


@pytest.fixture(scope="module")
def sample():
    return open_audit(SAMPLE / "segments", content="full")


def test_sample_files_are_small_and_readable_by_all():
    files = sorted((SAMPLE / "segments").glob("*.parquet"))
    assert len(files) >= 3  # rotated every few seconds: the segment charts have several bars
    assert sum(f.stat().st_size for f in files) < 400_000
    assert all(f.stat().st_mode & 0o777 == 0o644 for f in files)
    assert (SAMPLE / "README.md").exists()


def test_pods_namespaces_and_providers(sample):
    pods = dict(sample.sql("SELECT DISTINCT pod_name, pod_namespace FROM ai_calls").fetchall())
    assert pods == {p.name: p.namespace for p in audit_sample.PODS}  # names from the fake kubelet
    providers = {r[0] for r in sample.sql("SELECT DISTINCT provider_id FROM ai_calls").fetchall()}
    assert providers >= {"openai", "anthropic", "google", "cohere", "aws_bedrock", "openai_compatible"}
    workloads = {r[0] for r in sample.sql(
        "SELECT DISTINCT caller(pod_namespace, workload_name, pod_name, process_name) "
        "FROM ai_calls").fetchall()}
    assert workloads == {"support/support-bot", "research/paper-summarizer", "search/doc-indexer",
                         "platform/llm-gateway"}


def test_every_call_the_clients_made_is_in_the_sample(sample):
    truth = json.loads((SAMPLE / "truth.json").read_text())
    assert calls_per_pod(sample) == truth_per_pod(truth)


def test_streaming_errors_and_outcomes(sample):
    streaming = {r[0] for r in sample.sql("SELECT DISTINCT streaming FROM ai_calls").fetchall()}
    assert streaming == {True, False}
    statuses = Counter(r[0] for r in sample.sql("SELECT status_code FROM ai_calls").fetchall())
    assert statuses[429] >= 3 and statuses[500] == 1 and statuses[529] == 1
    assert statuses[None] >= 3  # the calls on the connection the recorder joined mid-way
    finish = {r[0] for r in sample.sql("SELECT DISTINCT finish_reason FROM ai_calls").fetchall()}
    assert {"stop", "length", "tool_calls"} <= finish


def test_incomplete_exchanges_of_three_kinds(sample):
    limitations = " ".join(r[0] for r in sample.sql(
        "SELECT event_json FROM events WHERE completeness = 'partial'").fetchall())
    assert "stream ended without [DONE]" in limitations  # the client that stopped reading
    assert "over_capture_limit" in limitations  # the prompt over the recorder's per-call limit
    assert "hpack_state_unknown" in limitations  # the connection opened before the recorder
    gaps = sample.sql("SELECT DISTINCT gap_reason FROM read_parquet($f) WHERE kind = 'gap'",
                      {"f": sample.segments}).fetchall()
    assert gaps == [("over_capture_limit",)]
    assert sample.sql("SELECT count(*) FROM exchanges WHERE NOT headers_reliable").fetchall()[0][0] >= 1


def test_prompts_carry_system_prompts_tools_and_fake_secrets(sample):
    requests = [json.loads(r[0])["data"] for r in sample.sql(
        "SELECT event_json FROM events WHERE event_type = 'ai.request'").fetchall()]
    assert sum(bool(d.get("has_system_prompt")) for d in requests) >= 10
    assert {t["name"] for d in requests for t in d.get("tools") or []} >= {"lookup_order", "search_papers"}
    text = " ".join(m.get("content") or "" for d in requests for m in d.get("messages") or [])
    assert FAKE_EMAIL in text and FAKE_AWS_KEY in text
    everything = "".join(r[0] for r in sample.sql("SELECT event_json FROM events").fetchall())
    assert KEY not in everything  # the API key itself is never in the events


@pytest.mark.ebpf
def test_recording_the_sample(tmp_path):
    """What scripts/record_audit_sample.py runs: every pod's calls recorded, named by the API server's
    watch, with its workload (through ReplicaSets and a Job), service account and image."""
    run = audit_sample.run(tmp_path)
    assert set(run.api_requests) <= {("watch", "pods"), ("get", "replicasets"), ("get", "jobs")}
    assert ("watch", "pods") in run.api_requests
    audit = open_audit(run.segments, content="none")
    assert calls_per_pod(audit) == truth_per_pod(run.truth)
    assert {r[0] for r in audit.sql("SELECT DISTINCT pod_namespace FROM ai_calls").fetchall()} == {
        "support", "research", "search", "platform"}
    workloads = set(audit.sql("SELECT DISTINCT pod_namespace, workload_kind, workload_name, service_account, "
                              "container_image FROM ai_calls").fetchall())
    assert workloads == {(p.namespace, *(p.workload or p.owner), p.app, f"registry.example/{p.app}:1.4")
                         for p in audit_sample.PODS}
