"""The sensor image and its two containers' resources, measured with podman on this machine: image
size and build times (scripts/build_image.sh), then the DaemonSet's pod run as the kubelet would run
it (tests/helpers/sensor_containers.py: the manifest's limits applied) at idle and under steady workloads of
stdlib-Python client containers (testbed/container_client.py) calling the fake OpenAI on the host.
Memory and CPU come from each container's cgroup. Writes the "containers" section of
docs/performance.md.

usage: .venv/bin/python bench/sensor_container.py [--cold] [--window SECONDS]
  --cold    also time a build from nothing (debootstrap again, no layer cache): about 6 minutes
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from report import write_section  # noqa: E402

from helpers.sensor_containers import (  # noqa: E402
    BASE_IMAGE,
    Pod,
    Workload,
    bridge_gateway,
    build_image,
    cpu_share,
    daemonset,
    podman,
    quantity_bytes,
    quantity_cpus,
    read_events,
    usage,
    wait_for,
)
from testbed import fake_providers  # noqa: E402
from testbed.hypercorn_server import HypercornServer  # noqa: E402
from testbed.pki import make_pki  # noqa: E402

MiB = 2**20
# scripts/build_image.sh's podman build, for a build context other than the repository
PODMAN_BUILD = ["podman", "build", "--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit",
                "nproc=1024:1024", "--layers", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                "--secret", "id=build-ca,src=/etc/ssl/certs/ca-certificates.crt"]
# (label, client containers, seconds between one client's calls, bytes added to each prompt)
LOADS = [("2 calls/s", 1, 0.5, 0), ("20 calls/s", 4, 0.2, 0), ("100 calls/s", 4, 0.04, 0),
         ("10 calls/s, 64 KiB prompts", 2, 0.2, 65536)]


def metric(c, name: str) -> float:
    """One unlabelled sample from a container's /metrics."""
    port = next(iter(c.ports.values()))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def timed_build(image: str, env: dict[str, str] | None = None, context: Path | None = None) -> float:
    if context is None:
        return build_image(image, env)[1]
    start = time.monotonic()
    out = subprocess.run([*PODMAN_BUILD, "-t", image, "-f", "Containerfile", str(context)],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return time.monotonic() - start


def code_change_rebuild(image: str) -> float:
    """A rebuild after a change of the code alone: the build context copied, one module changed."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp)
        for name in ("pyproject.toml", "README.md", "Containerfile", ".dockerignore"):
            shutil.copy(REPO / name, ctx / name)
        for name in ("recorder", "analyzer", "bpf", "container"):
            shutil.copytree(REPO / name, ctx / name, ignore=shutil.ignore_patterns("__pycache__"))
        with open(ctx / "recorder" / "__init__.py", "a") as f:
            f.write(f"\n# bench rebuild {time.time()}\n")
        seconds = timed_build(f"{image}-bench-rebuild", context=ctx)
    podman("rmi", f"{image}-bench-rebuild", check=False)
    return seconds


def compressed_size(image: str) -> int:
    """Bytes a node pulls: the layers gzip-compressed, as a registry stores them."""
    save = subprocess.Popen(["podman", "save", image], stdout=subprocess.PIPE)
    gz = subprocess.run(["gzip", "-6"], stdin=save.stdout, capture_output=True, check=True)
    save.wait()
    return len(gz.stdout)


def measure(pod: Pod, seconds: float) -> dict[str, dict]:
    """CPU share and memory of each container over a window."""
    pids = {n: c.pid for n, c in pod.containers.items()}
    first = {n: usage(p) for n, p in pids.items()}
    rec = pod.containers["recorder"]
    calls0 = metric(rec, "oisp_recorder_calls_total")
    bytes0 = metric(rec, "oisp_recorder_bytes_total")
    samples = {n: [] for n in pids}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1)  # one memory sample a second over the window
        for n, p in pids.items():
            samples[n].append(usage(p))
    last = {n: s[-1] for n, s in samples.items()}
    out = {n: {"cpu": cpu_share(first[n], last[n]),
               "ws_max": max(u.working_set for u in samples[n]),
               "rss_max": max(u.rss for u in samples[n]),
               "peak": last[n].peak} for n in pids}
    elapsed = last["recorder"].at - first["recorder"].at
    out["node"] = {"tls_calls_per_s": (metric(rec, "oisp_recorder_calls_total") - calls0) / elapsed,
                   "tls_kb_per_s": (metric(rec, "oisp_recorder_bytes_total") - bytes0) / elapsed / 1000}
    return out


def row(label: str, m: dict, extra: str = "") -> str:
    r, a, node = m["recorder"], m["analyzer"], m["node"]
    return (f"| {label} | {node['tls_calls_per_s']:.0f} | {r['cpu']:.1%} | {r['ws_max'] / MiB:.0f} MiB | "
            f"{r['rss_max'] / MiB:.0f} MiB | {a['cpu']:.1%} | {a['ws_max'] / MiB:.0f} MiB | "
            f"{a['rss_max'] / MiB:.0f} MiB |{extra}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--window", type=float, default=60)
    args = ap.parse_args()
    spec, configmaps = daemonset()
    (image,) = {c["image"] for c in spec["containers"]}

    cold = timed_build(image, {"REBUILD_BASE": "1", "NO_CACHE": "1"}) if args.cold else None
    build_image(image)
    warm = timed_build(image)
    rebuild = code_change_rebuild(image)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    base_size = int(podman("image", "inspect", "--format", "{{.Size}}", BASE_IMAGE).stdout)
    packed = compressed_size(image)
    print(f"image {size / 1e6:.0f} MB ({packed / 1e6:.0f} MB gzip), base {base_size / 1e6:.0f} MB; build "
          f"cold {cold}, unchanged {warm:.1f} s, code change {rebuild:.1f} s", flush=True)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="oisp-bench-") as tmp:
        tmp = Path(tmp)
        pod = Pod(spec, configmaps, image, tmp / "node", "oisp-bench")
        workloads: list[Workload] = []
        server = None
        try:
            t0 = time.monotonic()
            rec = pod.start("recorder")
            ana = pod.start("analyzer")
            wait_for(lambda: rec.probe("readinessProbe"), "recorder ready", timeout=300, alive=rec.running,
                     interval=0.5)
            ready_s = time.monotonic() - t0
            wait_for(lambda: ana.probe("readinessProbe"), "analyzer ready", timeout=60, alive=ana.running)
            startup_peak = {n: usage(c.pid).peak for n, c in pod.containers.items()}
            time.sleep(10)  # let the first rescan and segment settle before the idle window
            results["idle"] = measure(pod, args.window)
            print(row("idle", results["idle"]), flush=True)
            pki = make_pki(tmp / "pki", "api.openai.com", "localhost")
            server = HypercornServer(pki, tmp, app=fake_providers.app, host=bridge_gateway())
            for label, clients, interval, prompt_bytes in LOADS:
                batch = [Workload(server, pki.ca_file, tmp / f"w{len(workloads) + i}", 0, interval,
                                  prompt_bytes) for i in range(clients)]
                workloads += batch
                for w in batch:
                    w.go(rec)
                time.sleep(5)  # the load reaches its steady rate
                results[label] = measure(pod, args.window)
                for w in batch:
                    w.stop()
                calls = sum(w.result()["calls"] for w in batch)
                ended = time.monotonic()
                events_file = pod.host_dir("analyzer", "/output") / "events.jsonl"
                ids = {w.cid for w in batch}

                def written(ids=ids, calls=calls, events_file=events_file):
                    n = sum(1 for e in read_events(events_file)
                            if (e.get("host", {}).get("container") or {}).get("id") in ids)
                    return n >= 2 * calls
                wait_for(written, f"events of {label}", timeout=120, interval=2)
                results[label]["events_after_s"] = time.monotonic() - ended
                results[label]["calls"] = calls
                print(row(label, results[label]), f"{calls} calls, all events "
                      f"{results[label]['events_after_s']:.1f} s after the last", flush=True)
            peak = {n: usage(c.pid).peak for n, c in pod.containers.items()}
            codes = pod.stop()
            assert set(codes.values()) == {0}, codes
        finally:
            for w in workloads:
                w.remove()
            if server:
                server.close()
            pod.remove()

    res = {c["name"]: c["resources"] for c in spec["containers"]}
    verdicts = []
    for n, r in res.items():
        ws = max(m[n]["ws_max"] for m in results.values())
        cpu = max(m[n]["cpu"] for m in results.values())
        req_mem, lim_mem = quantity_bytes(r["requests"]["memory"]), quantity_bytes(r["limits"]["memory"])
        req_cpu, lim_cpu = quantity_cpus(r["requests"]["cpu"]), quantity_cpus(r["limits"]["cpu"])
        verdicts.append(
            f"- {n}: working set up to {ws / MiB:.0f} MiB, {ws / lim_mem:.0%} of the {r['limits']['memory']} "
            f"limit ({'room to spare' if ws < 0.6 * lim_mem else 'too little room'}) and "
            f"{'within' if ws <= req_mem else 'above'} the {r['requests']['memory']} request; CPU up to "
            f"{cpu:.0%} of a core, {'within' if cpu <= req_cpu else 'above'} the {r['requests']['cpu']} "
            f"request and {'within' if cpu <= lim_cpu else 'above'} the {r['limits']['cpu']} CPU limit.")
    rows = "\n".join(row(label, m) for label, m in results.items())
    lat = ", ".join(f"{label}: {m['events_after_s']:.1f} s" for label, m in results.items() if "calls" in m)
    limits = ", ".join(f"{n} requests {r['requests']['memory']}/{r['requests']['cpu']}, limits "
                       f"{r['limits']['memory']}/{r['limits']['cpu']}" for n, r in res.items())
    cold_text = f"{cold:.0f} s from nothing (debootstrap included), " if cold else ""
    body = f"""## The sensor's image and pod (`bench/sensor_container.py`)

The image built by `scripts/build_image.sh` (Debian 12 base by debootstrap, then the `Containerfile`):
**{size / 1e6:.0f} MB** on disk ({packed / 1e6:.0f} MB gzip-compressed, what a node pulls); the base is
{base_size / 1e6:.0f} MB. Build: {cold_text}{warm:.0f} s when nothing changed, {rebuild:.0f} s after a change
of the code (only the project's last layer is rebuilt; a change of `pyproject.toml` reinstalls the
dependencies too, about a minute more).

The DaemonSet's pod run with podman as the kubelet would ({limits}), on this
2-CPU VM. Ready (every probe attached) {ready_s:.0f} s after start (bcc compiles the program);
peak memory during start-up: recorder {startup_peak['recorder'] / MiB:.0f} MiB, analyzer
{startup_peak['analyzer'] / MiB:.0f} MiB. Then {args.window:.0f} s windows: idle (no workload of ours;
the node's other TLS traffic, from other users of the VM, is in the "node TLS calls/s" column), and
steady workloads of client containers, each calling the fake OpenAI at a fixed rate over one
keep-alive connection. CPU is the share of one core over the window; memory is the highest working
set (usage less inactive file cache: what the kubelet compares with the limit, the ring buffer's
kernel memory included) and the highest resident anonymous memory, sampled each second.

| load | node TLS calls/s | recorder CPU | recorder working set | recorder RSS | analyzer CPU | \
analyzer working set | analyzer RSS |
| --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

Peak memory over the whole run (cgroup maximum, page cache included): recorder
{peak['recorder'] / MiB:.0f} MiB, analyzer {peak['analyzer'] / MiB:.0f} MiB. All events of a load were
in `/output/events.jsonl` this long after its last call ({lat}): the recorder publishes a segment
every `segment_max_seconds` (10 s in the ConfigMap).

Against the DaemonSet's resources (the highest of the windows above):
{chr(10).join(verdicts)}
"""
    write_section("containers", body)
    print(body)


if __name__ == "__main__":
    main()
