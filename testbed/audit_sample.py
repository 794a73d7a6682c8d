"""Record the audit sample: several workloads (testbed/audit_workload.py) in several pods of several
namespaces, under the real recorder, which learns the pods' names and workloads from a fake API server.

Like testbed/e2e_run.py: fake providers on 127.0.0.1:443 and :8443 under their real host names (each
client in a private mount namespace whose /etc/hosts points there), each pod a cgroup named as the
kubelet names a containerd container's, the recorder filtered to those cgroups. The API server is a
local HTTPS server (testbed/fake_kube_api.py) whose watch names the pods, their namespaces, containers,
images and service accounts, and whose ReplicaSets and Jobs lead to their Deployments and CronJob
(recorder config `kubernetes_metadata: apiserver`, recorder/identity/pods.py). The recorder is configured
to rotate segments every few seconds (so there are several) and to capture at most 64 KiB of one TLS
call (so the largest prompt leaves a gap, as a too-small limit would in production).

Used by scripts/record_audit_sample.py (samples/audit/) and tests/analyzer/reports/test_audit_sample.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import fake_providers
from .e2e_run import HOSTS, _pod_cgroup, _remove
from .fake_kube_api import FakeKubeApi
from .fake_kube_api import pod as fake_pod
from .ground_truth import GroundTruthLog, recording
from .hypercorn_server import HypercornServer
from .pki import make_pki

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROVIDER_HOSTS = (*HOSTS, "api.cohere.com", "bedrock-runtime.us-east-1.amazonaws.com")
NODE = "worker-1"
API_TOKEN = "service-account-token-for-the-audit-sample"
RECORDER_CONFIG = {
    "node_name": NODE,
    "segment_max_seconds": 3,
    "max_chunks_per_call": 4,  # 4 x 16 KiB chunks: 64 KiB of one TLS call at most
    "kubernetes_metadata": "apiserver",
    "log_level": "info",
}


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    app: str
    container: str
    role: str  # testbed/audit_workload.py role
    replica: int = 0
    owner: tuple[str, str] | None = None  # its controller (kind, name)
    workload: tuple[str, str] | None = None  # the controller's owner, where it has one

    @property
    def uid(self) -> str:  # stable across recordings, so a regenerated sample differs only where it must
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod/{self.namespace}/{self.name}"))

    @property
    def container_id(self) -> str:
        return hashlib.sha256(f"container/{self.namespace}/{self.name}/{self.container}".encode()).hexdigest()


PODS = (
    Pod("support", "support-bot-6d8f9c7b5-k2x9p", "support-bot", "bot", "support-bot", 0,
        ("ReplicaSet", "support-bot-6d8f9c7b5"), ("Deployment", "support-bot")),
    Pod("support", "support-bot-6d8f9c7b5-w7m4q", "support-bot", "bot", "support-bot", 1,
        ("ReplicaSet", "support-bot-6d8f9c7b5"), ("Deployment", "support-bot")),
    Pod("research", "paper-summarizer-0", "paper-summarizer", "summarizer", "summarizer", 0,
        ("StatefulSet", "paper-summarizer")),
    Pod("search", "doc-indexer-29104560-x8d2n", "doc-indexer", "indexer", "indexer", 0,
        ("Job", "doc-indexer-29104560"), ("CronJob", "doc-indexer")),
    Pod("platform", "llm-gateway-7b5d4c9f8-p3n6t", "llm-gateway", "gateway", "gateway", 0,
        ("ReplicaSet", "llm-gateway-7b5d4c9f8"), ("Deployment", "llm-gateway")),
)


@dataclass
class AuditRun:
    workdir: Path
    segments: Path
    truth: list[dict]  # per pod: what its clients saw (testbed/audit_workload.py)
    server_log: list[dict]
    recorder_log: str
    api_requests: list[tuple[str, str]]  # (verb, resource) of each request the recorder made


def fake_api(pki, pods=PODS) -> FakeKubeApi:
    """The API server of the sample's cluster: the pods on NODE, their ReplicaSets and Job."""
    api = FakeKubeApi(pki, API_TOKEN, NODE)
    for p in pods:
        if p.owner and p.owner[0] in ("ReplicaSet", "Job"):
            api.add_controller(*p.owner, p.namespace, p.workload)
        api.event("ADDED", fake_pod(p.uid, p.name, p.namespace, NODE,
                                    containers={p.container: f"containerd://{p.container_id}"},
                                    images={p.container: f"registry.example/{p.app}:1.4"},
                                    labels={"app.kubernetes.io/name": p.app}, service_account=p.app,
                                    owner=p.owner))
    return api


def _start_pod(pod: Pod, workdir: Path, ca_file: Path, hosts: Path) -> tuple[subprocess.Popen, Path]:
    cgroup, _ = _pod_cgroup(pod.uid, pod.container_id)
    cgroup.mkdir(parents=True, exist_ok=True)
    inner = (f"echo $$ > {cgroup}/cgroup.procs && mount --bind {hosts} /etc/hosts && exec env "
             f"SSL_CERT_FILE={ca_file} AWS_CA_BUNDLE={ca_file} {sys.executable} -m testbed.audit_workload "
             f"{pod.role} {pod.replica}")
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", inner], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, cgroup


def run(workdir: Path, pods=PODS) -> AuditRun:
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_pki(workdir / "pki", *PROVIDER_HOSTS, "localhost")
    log = GroundTruthLog(workdir / "server-truth.jsonl")
    # A loopback address of its own: other test runs on this machine serve 127.0.0.1:443 meanwhile.
    address = f"127.{random.randrange(16, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"
    server = HypercornServer(pki, workdir, app=recording(fake_providers.app, log), port=443,
                             extra_ports=(8443,), keep_alive_seconds=300, host=address)
    api_pki = make_pki(workdir / "api-pki")  # localhost and 127.0.0.1
    api = fake_api(api_pki, pods)
    token = workdir / "token"
    token.write_text(API_TOKEN + "\n")
    hosts = workdir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{address} {' '.join(PROVIDER_HOSTS)}\n")
    config = workdir / "recorder.yaml"
    config.write_text(yaml.safe_dump({"recorder": {
        **RECORDER_CONFIG, "kubernetes_api_url": api.url, "kubernetes_token_file": str(token),
        "kubernetes_ca_file": str(api_pki.ca_file)}}))
    segments, ready, rec_log = workdir / "segments", workdir / "ready.json", workdir / "recorder.log"
    started: list[tuple[subprocess.Popen, Path]] = []
    rec = None
    try:
        for pod in pods:
            started.append(_start_pod(pod, workdir, pki.ca_file, hosts))
        for (proc, _), pod in zip(started, pods, strict=True):
            first = proc.stdout.readline()
            if not first or not json.loads(first).get("ready"):
                raise RuntimeError(f"the workload of {pod.name} did not start")
        cgroup_args = [arg for pod in pods for arg in ("--cgroup", _pod_cgroup(pod.uid, pod.container_id)[1])]
        with rec_log.open("w") as out:
            rec = subprocess.Popen([str(BIN / "oisp-record"), "--config", str(config), "--segments-dir",
                                    str(segments), "--ready-file", str(ready), *cgroup_args],
                                   stdout=out, stderr=subprocess.STDOUT)
        while not ready.exists():
            if rec.poll() is not None:
                raise RuntimeError(f"the recorder failed:\n{rec_log.read_text()}")
            time.sleep(0.05)  # polling the recorder's readiness signal
        for proc, _ in started:  # all pods at once: their calls interleave as a cluster's would
            proc.stdin.write("go\n")
            proc.stdin.flush()
        truth = []
        for (proc, _), pod in zip(started, pods, strict=True):
            line = proc.stdout.readline()
            if proc.wait(timeout=600) != 0 or not line:
                raise RuntimeError(f"the workload of {pod.name} failed (exit {proc.returncode})")
            truth.append({"namespace": pod.namespace, "pod": pod.name, **json.loads(line)})
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rec is not None and rec.poll() is None:
            rec.send_signal(signal.SIGTERM)
            rec.wait(timeout=120)
        server.close()
        api.close()
        for _, cgroup in started:
            _remove(cgroup)
    return AuditRun(workdir, segments, truth, log.entries(), rec_log.read_text(), list(api.requests))


if __name__ == "__main__":
    result = run(Path(sys.argv[1]))
    for t in result.truth:
        print(f"{t['namespace']}/{t['pod']}: {len(t['calls'])} AI calls")
    print(f"segments in {result.segments}")
