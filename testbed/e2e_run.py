"""Run the end-to-end workload under the real recorder: fake providers on 127.0.0.1:443 and :8443
(HTTP/1.1 and HTTP/2 by ALPN, every exchange logged byte-exact), the clients in a private mount
namespace whose /etc/hosts points the providers' real host names at them, in a cgroup named like a
Kubernetes pod's so the recorder captures exactly the workload (a cgroup filter) and the events say
which "pod" made each call. Used by tests/ebpf/test_e2e.py and by `make run`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from recorder.identity.cgroups import cgroup2_root

from . import fake_providers
from .ground_truth import GroundTruthLog, recording
from .hypercorn_server import HypercornServer
from .pki import make_pki

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOSTS = ("api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "llm.internal",
         "static.example.com")


@dataclass
class E2eRun:
    workdir: Path
    segments: Path
    truth: dict  # what the clients saw (testbed/e2e_workload.py)
    server_log: list[dict]  # what the servers received and sent
    recorder_log: str
    pod_uid: str
    container_id: str


def _pod_cgroup(pod_uid: str, container_id: str) -> tuple[Path, str]:
    pod = f"kubepods-besteffort-pod{pod_uid.replace('-', '_')}.slice"
    rel = f"/kubepods.slice/kubepods-besteffort.slice/{pod}/cri-containerd-{container_id}.scope"
    return cgroup2_root() / rel.lstrip("/"), rel


def _remove(cgroup: Path) -> None:
    for d in (cgroup, cgroup.parent, cgroup.parent.parent, cgroup.parent.parent.parent):
        try:
            d.rmdir()
        except OSError:
            return


def run(workdir: Path, quick: bool = False, extra_recorder_args: tuple[str, ...] = (),
        module: str = "testbed.e2e_workload") -> E2eRun:
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_pki(workdir / "pki", *HOSTS, "localhost")
    log = GroundTruthLog(workdir / "server-truth.jsonl")
    # idle connections are kept long enough to outlive the recorder's start (late-start test)
    server = HypercornServer(pki, workdir, app=recording(fake_providers.app, log), port=443,
                             extra_ports=(8443,), keep_alive_seconds=300)
    hosts = workdir / "hosts"
    hosts.write_text("127.0.0.1 localhost " + " ".join(HOSTS) + "\n")
    pod_uid, container_id = str(uuid.uuid4()), uuid.uuid4().hex + uuid.uuid4().hex
    cgroup, cgroup_rel = _pod_cgroup(pod_uid, container_id)
    cgroup.mkdir(parents=True)
    inner = (f"echo $$ > {cgroup}/cgroup.procs && mount --bind {hosts} /etc/hosts && exec env "
             f"SSL_CERT_FILE={pki.ca_file} {sys.executable} -m {module} {workdir}"
             + (" --quick" if quick else ""))
    client = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", inner], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    segments = workdir / "segments"
    ready = workdir / "ready.json"
    rec_log = workdir / "recorder.log"
    rec = None
    try:
        first = client.stdout.readline()
        if not first or not json.loads(first).get("ready"):
            raise RuntimeError("the e2e workload did not start")
        with rec_log.open("w") as out:
            rec = subprocess.Popen([str(BIN / "oisp-record"), "--segments-dir", str(segments), "--ready-file",
                                    str(ready), "--cgroup", cgroup_rel, *extra_recorder_args],
                                   stdout=out, stderr=subprocess.STDOUT)
        while not ready.exists():
            if rec.poll() is not None:
                raise RuntimeError(f"the recorder failed:\n{rec_log.read_text()}")
            time.sleep(0.05)  # polling the recorder's readiness signal
        client.stdin.write("go\n")
        client.stdin.flush()
        line = client.stdout.readline()
        if client.wait(timeout=600) != 0 or not line:
            raise RuntimeError(f"the e2e workload failed (exit {client.returncode})")
        truth = json.loads(line)
    finally:
        if client.poll() is None:
            client.kill()
        if rec is not None and rec.poll() is None:
            rec.send_signal(signal.SIGTERM)
            rec.wait(timeout=120)
        server.close()
        _remove(cgroup)
    return E2eRun(workdir, segments, truth, log.entries(), rec_log.read_text(), pod_uid, container_id)


if __name__ == "__main__":
    result = run(Path(sys.argv[1]), quick="--quick" in sys.argv)
    clients = sorted({c["client"] for c in result.truth["calls"]})
    print(f"{len(result.truth['calls'])} AI calls by {', '.join(clients)}; "
          f"{len(result.truth['non_ai'])} non-AI calls; segments in {result.segments}")
