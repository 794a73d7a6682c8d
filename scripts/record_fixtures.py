"""Record the analyzer's replay fixtures with the real recorder, and write their golden outputs.

usage (root, eBPF): .venv/bin/python scripts/record_fixtures.py [NAME ...]
For each workload in testbed.http_workloads: serve testbed.asgi_app with hypercorn (TLS, ALPN h2 and
http/1.1), start the client, start oisp-record limited to the client's pid, let the client run,
stop the recorder. Segments go to tests/fixtures/segments/NAME/, the analyzer's exchanges to
tests/fixtures/golden/NAME.exchanges.jsonl. Rerun after a deliberate change of the output format,
and review the golden diff.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recorder.identity.cgroups import cgroup2_root  # noqa: E402
from testbed import fake_providers  # noqa: E402
from testbed.hypercorn_server import HypercornServer  # noqa: E402
from testbed.pki import make_pki  # noqa: E402

BIN = Path(sys.executable).parent
FIXTURES = REPO / "tests" / "fixtures"


PROVIDER_HOSTS = ("api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com",
                  "bedrock-runtime.us-east-1.amazonaws.com", "api.cohere.com")
SDK_WORKLOADS = {"sdk": "testbed.sdk_workload", "sdk_more": "testbed.sdk_workload_more"}
# The SDK clients run in a cgroup named as the kubelet names a containerd container's (systemd
# driver), so the fixtures carry container and pod identity as they would on a node.
POD_UID = "3f6c1a2e-9b7d-4e58-a1c4-5d2e8f0b6a97"
CONTAINER_ID = "4be1d7c0a9e35f6b28c1d04e7a9f3b5c6d8e0f1a2b3c4d5e6f708192a3b4c5d6"


def pod_cgroup() -> Path:
    root = cgroup2_root()
    pod = f"kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice"
    return root / "kubepods.slice" / "kubepods-burstable.slice" / pod / f"cri-containerd-{CONTAINER_ID}.scope"


def remove_pod_cgroup() -> None:
    d = pod_cgroup()
    for _ in range(4):
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def start_client(name: str, work: Path):
    """The server, and the client process (waiting for a line on stdin)."""
    if name in SDK_WORKLOADS:
        # real SDKs, real host names: a private mount namespace whose /etc/hosts points the
        # provider hosts at the fake server on 127.0.0.1:443; the host's /etc/hosts is untouched
        pki = make_pki(work / "pki", *PROVIDER_HOSTS, "localhost")
        server = HypercornServer(pki, work, app=fake_providers.app, port=443, extra_ports=(11434,))
        hosts = work / "hosts"
        hosts.write_text("127.0.0.1 localhost " + " ".join(PROVIDER_HOSTS) + "\n")
        cgroup = pod_cgroup()
        cgroup.mkdir(parents=True, exist_ok=True)
        inner = (f"echo $$ > {cgroup}/cgroup.procs && "
                 f"mount --bind {hosts} /etc/hosts && exec env SSL_CERT_FILE={pki.ca_file} "
                 f"AWS_CA_BUNDLE={pki.ca_file} {sys.executable} -m {SDK_WORKLOADS[name]}")
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", inner]
    else:
        pki = make_pki(work / "pki", "localhost")
        server = HypercornServer(pki, work)
        cmd = [sys.executable, "-m", "testbed.http_workloads", name, server.url, str(pki.ca_file)]
    client = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return server, client


def record(name: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"fixture-{name}-"))
    server, client = start_client(name, work)
    assert json.loads(client.stdout.readline())["ready"]
    segments = FIXTURES / "segments" / name
    shutil.rmtree(segments, ignore_errors=True)
    ready = work / "ready.json"
    rec = subprocess.Popen([str(BIN / "oisp-record"), "--segments-dir", str(segments), "--ready-file",
                            str(ready), "--pid", str(client.pid), "--log-level", "warning"])
    while not ready.exists():
        if rec.poll() is not None:
            raise SystemExit("recorder failed")
        time.sleep(0.05)
    try:
        client.stdin.write("go\n")
        client.stdin.flush()
        line = client.stdout.readline()
        if client.wait(timeout=300) != 0 or not line:
            raise SystemExit(f"{name}: the client failed (exit {client.returncode}); nothing recorded")
        result = json.loads(line)
    finally:
        rec.send_signal(signal.SIGTERM)
        rec.wait()
        server.close()
        remove_pod_cgroup()
    segments.chmod(0o755)
    for f in segments.iterdir():
        f.chmod(0o644)
    golden = FIXTURES / "golden" / f"{name}.exchanges.jsonl"
    golden.parent.mkdir(parents=True, exist_ok=True)
    events = FIXTURES / "golden" / f"{name}.events.jsonl"
    subprocess.run([str(BIN / "oisp-analyze"), str(segments), "--exchanges", str(golden),
                    "--out", str(events)], check=True)
    truth = FIXTURES / "golden" / f"{name}.truth.json"
    truth.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{name}: client {result}, {sum(f.stat().st_size for f in segments.iterdir())} bytes of segments")


if __name__ == "__main__":
    for workload in sys.argv[1:] or ["h1", "h2", "sdk", "sdk_more"]:
        record(workload)
