"""The sensor image run with podman the way the kubelet runs the DaemonSet's containers, read from the
built DaemonSet: host PID namespace, user, capabilities, seccomp and AppArmor, read-only root, the
volumes (hostPath, the ConfigMap's files, emptyDirs), env with the downward API's values, command,
ports, probes and resource limits. Whatever the manifest says that this translation does not know is
an error, so the manifest and what the tests run cannot drift apart. Shared by tests/ebpf/test_containers.py
and bench/sensor_container.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build_image.sh"
BASE_IMAGE = "localhost/oisp-debian-base:bookworm"
# What runs containers on the development VM and in CI (scripts/build_image.sh says why).
PODMAN = ["podman", "--runtime", "runc"]
RUN_OPTS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# The base image's libssl as the workload's processes see it (Debian's /lib is a link to /usr/lib).
CONTAINER_LIBSSL = ("/usr/lib/x86_64-linux-gnu/libssl.so.3", "/lib/x86_64-linux-gnu/libssl.so.3")
NODE_NAME = "podman-node"  # the downward API's spec.nodeName
HOST_IP = "127.0.0.1"      # ... and status.hostIP
# Host paths the sensor writes: remapped into the test's directory. Every other hostPath (tracefs,
# bpffs, /lib/modules, /usr/src) is this machine's own, as on a node.
WRITTEN_HOST_PATHS = ("/var/lib/oisp-sensor/segments", "/var/log/oisp-sensor")


def unavailable_reason() -> str | None:
    """Why the sensor image cannot be built and run here (None when it can)."""
    if os.geteuid() != 0:
        return "not root (rootful podman and debootstrap)"
    for tool, package in (("podman", "podman"), ("runc", "runc"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install {package}; scripts/setup.sh installs it)"
    return None


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    out = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return out


def build_image(image: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Build (or find up to date, from podman's layer cache) the sensor image; (image id, seconds)."""
    start = time.monotonic()
    env = {**os.environ, "IMAGE": image, "BASE_IMAGE": BASE_IMAGE, **(env or {})}
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise AssertionError(f"scripts/build_image.sh failed ({out.returncode}):\n{out.stderr[-5000:]}")
    return out.stdout.split()[-1], time.monotonic() - start


def daemonset() -> tuple[dict, dict[str, dict]]:
    """(pod spec, ConfigMaps by name) of the kubernetes overlay as `kubectl apply -k` gets it; without
    kubectl, of the base's files (the overlay only adds AppArmor's unconfined, translated the same)."""
    from helpers.deploy_manifests import MANIFESTS, build, kubectl, pod_spec

    if kubectl():
        objects = build("kubernetes")
        configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
        return pod_spec("kubernetes"), configmaps
    spec = yaml.safe_load((MANIFESTS / "base" / "daemonset.yaml").read_text())["spec"]["template"]["spec"]
    kustomization = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    configmaps = {g["name"]: {Path(f).name: (MANIFESTS / "base" / f).read_text() for f in g["files"]}
                  for g in kustomization.get("configMapGenerator", [])}
    return spec, configmaps


def quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * factor)
    return int(q)


def quantity_cpus(q: str) -> float:
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


@dataclass
class PodContainer:
    """One container of the DaemonSet's pod, running under podman."""

    name: str
    spec: dict  # the container's entry in the pod spec
    cid: str
    ports: dict[int, int]  # container port -> host port
    host_dirs: dict[str, Path]  # mount path -> directory on this machine
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.cid).stdout)

    def running(self) -> bool:
        return podman("inspect", "--format", "{{.State.Running}}", self.cid).stdout.strip() == "true"

    def logs(self) -> str:
        out = podman("logs", self.cid, check=False)
        return out.stdout + out.stderr

    def probe(self, kind: str) -> bool:
        """Run the container's probe of this kind as the kubelet would."""
        p = self.spec[kind]
        if "exec" in p:
            return podman("exec", self.cid, *p["exec"]["command"], check=False).returncode == 0
        port = p["httpGet"]["port"]
        port = {x["name"]: x["containerPort"] for x in self.spec.get("ports", [])}.get(port, port)
        try:
            url = f"http://127.0.0.1:{self.ports[port]}{p['httpGet']['path']}"
            with urllib.request.urlopen(url, timeout=p.get("timeoutSeconds", 1)) as r:
                return 200 <= r.status < 400
        except OSError:
            return False

    def stop(self, grace: int) -> int:
        """SIGTERM, then SIGKILL after the pod's grace period, as the kubelet does; the exit code."""
        if self.exit_code is None:
            podman("stop", "--time", str(grace), self.cid, timeout=grace + 60)
            self.exit_code = int(podman("inspect", "--format", "{{.State.ExitCode}}", self.cid).stdout)
        return self.exit_code

    def remove(self) -> None:
        """Stop (SIGTERM first: a killed recorder leaves its probe events in tracefs) and remove."""
        for _ in range(3):  # a removal racing the container's own cleanup can fail once
            out = podman("rm", "--force", "--time", "10", self.cid, check=False, timeout=60)
            if out.returncode == 0 or "no such container" in out.stderr:
                return
        warnings.warn(f"podman rm {self.cid}: {out.stderr.strip()}", stacklevel=2)


@dataclass
class Pod:
    """The DaemonSet's pod on this machine: what podman runs for each container, and where its
    volumes are here."""

    spec: dict
    configmaps: dict[str, dict]
    image: str
    workdir: Path
    name: str
    # what `podman run` starts: the id the build returned, so that another build retagging the image
    # meanwhile (a second checkout's tests) cannot swap it under this pod
    image_id: str | None = None
    containers: dict[str, PodContainer] = field(default_factory=dict)
    sampler: Sampler | None = None  # memory samples of the containers, when someone takes them

    def host_path(self, path: str) -> Path:
        """Where a hostPath of the manifest is on this machine."""
        if path in WRITTEN_HOST_PATHS:
            return self.workdir / "host" / path.lstrip("/")
        return Path(path)

    def _volume_args(self, c: dict) -> tuple[list[str], dict[str, Path]]:
        volumes = {v["name"]: v for v in self.spec["volumes"]}
        args, dirs = [], {}
        for m in c.get("volumeMounts", []):
            unknown = set(m) - {"name", "mountPath", "readOnly"}
            assert not unknown, f"volumeMount fields not translated for podman: {unknown}"
            v = volumes[m["name"]]
            read_only = bool(m.get("readOnly"))
            kinds = set(v) - {"name"}
            assert len(kinds) == 1, v
            kind = kinds.pop()
            if kind == "hostPath":
                here = self.host_path(v["hostPath"]["path"])
                if v["hostPath"].get("type") == "DirectoryOrCreate":
                    here.mkdir(parents=True, exist_ok=True, mode=0o755)
                assert here.is_dir(), f"hostPath {v['hostPath']} missing"
            elif kind == "emptyDir":
                size = quantity_bytes(v["emptyDir"].get("sizeLimit", "64Mi"))
                if v["emptyDir"].get("medium") == "Memory":
                    args += ["--tmpfs", f"{m['mountPath']}:rw,size={size},mode=1777"]
                    continue
                here = self.workdir / "pod" / v["name"]  # on disk, as the kubelet's emptyDirs
                here.mkdir(parents=True, exist_ok=True)
            elif kind == "configMap":
                here = self.workdir / "pod" / v["name"]
                here.mkdir(parents=True, exist_ok=True)
                for key, text in self.configmaps[v["configMap"]["name"]].items():
                    (here / key).write_text(text)
                read_only = True  # the kubelet mounts ConfigMaps read-only
            elif kind == "projected":
                # The ServiceAccount token, CA and namespace exist only in a cluster; an empty
                # directory in their place (kubernetes_metadata: auto finds no cluster and turns off).
                here = self.workdir / "pod" / v["name"]
                here.mkdir(parents=True, exist_ok=True)
                read_only = True
            else:
                raise AssertionError(f"volume type {kind} not translated for podman")
            dirs[m["mountPath"]] = here
            args += ["--volume", f"{here}:{m['mountPath']}:{'ro' if read_only else 'rw'}"]
        return args, dirs

    def _security_args(self, c: dict) -> list[str]:
        pod_sc, sc = self.spec.get("securityContext", {}), c.get("securityContext", {})
        handled = {"privileged", "runAsUser", "runAsNonRoot", "allowPrivilegeEscalation",
                   "readOnlyRootFilesystem", "capabilities", "seccompProfile", "appArmorProfile"}
        assert not set(sc) - handled, f"securityContext fields not translated for podman: {set(sc) - handled}"
        assert not set(pod_sc) - {"seccompProfile"}, f"pod securityContext not translated: {pod_sc}"
        args = []
        if sc.get("privileged"):
            args.append("--privileged")
        if "runAsUser" in sc:
            args += ["--user", str(sc["runAsUser"])]
        if sc.get("runAsNonRoot"):
            assert sc.get("runAsUser", 0) != 0
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if sc.get("readOnlyRootFilesystem"):
            # podman otherwise mounts tmpfs on /run, /tmp and /var/tmp of a read-only container;
            # the kubelet does not, so the pod's own emptyDirs are all that is writable.
            args += ["--read-only", "--read-only-tmpfs=false"]
        caps = sc.get("capabilities", {})
        for cap in caps.get("drop", []):
            args += ["--cap-drop", cap]
        for cap in caps.get("add", []):
            args += ["--cap-add", cap]
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        seccomp = seccomp or "RuntimeDefault"
        assert seccomp in ("RuntimeDefault", "Unconfined"), seccomp
        if seccomp == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        apparmor = sc.get("appArmorProfile", {}).get("type", "RuntimeDefault")
        assert apparmor in ("RuntimeDefault", "Unconfined"), apparmor
        if apparmor == "Unconfined":
            args += ["--security-opt", "apparmor=unconfined"]
        return args

    def _resource_args(self, c: dict) -> list[str]:
        res = c.get("resources", {})
        limits, requests = res.get("limits", {}), res.get("requests", {})
        args = []
        if "memory" in limits:
            args += ["--memory", str(quantity_bytes(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", str(quantity_cpus(limits["cpu"]))]
        if "memory" in requests:
            args += ["--memory-reservation", str(quantity_bytes(requests["memory"]))]
        if "cpu" in requests:  # the kubelet's conversion of a CPU request to shares
            args += ["--cpu-shares", str(max(2, int(quantity_cpus(requests["cpu"]) * 1024)))]
        return args

    def run_args(self, name: str) -> tuple[list[str], dict[str, Path]]:
        """The `podman run` arguments (after `run`) of one container, and its directories here."""
        (c,) = [c for c in self.spec["containers"] if c["name"] == name]
        assert c["image"] == self.image, (c["image"], self.image)
        assert not self.spec.get("hostNetwork") and not self.spec.get("hostIPC")
        args = ["--detach", "--name", f"{self.name}-{name}", *RUN_OPTS]
        if self.spec.get("hostPID"):
            args += ["--pid", "host"]
        args += self._security_args(c)
        volume_args, dirs = self._volume_args(c)
        args += volume_args + self._resource_args(c)
        for e in c.get("env", []):
            if "value" in e:
                value = e["value"]
            else:
                field_path = e["valueFrom"]["fieldRef"]["fieldPath"]
                value = {"spec.nodeName": NODE_NAME, "status.hostIP": HOST_IP}[field_path]
            args += ["--env", f"{e['name']}={value}"]
        for p in c.get("ports", []):
            assert p.get("protocol", "TCP") == "TCP"
            args += ["--publish", f"127.0.0.1::{p['containerPort']}"]  # a free port here, for the probes
        if "command" in c:
            args += ["--entrypoint", json.dumps(c["command"])]
        return [*args, self.image_id or self.image, *c.get("args", [])], dirs

    def start(self, name: str) -> PodContainer:
        args, dirs = self.run_args(name)
        cid = podman("run", *args).stdout.strip().splitlines()[-1]
        spec = next(c for c in self.spec["containers"] if c["name"] == name)
        ports = {}
        for p in spec.get("ports", []):
            out = podman("port", cid, f"{p['containerPort']}/tcp").stdout.strip()
            ports[p["containerPort"]] = int(out.rsplit(":", 1)[1])
        self.containers[name] = PodContainer(name, spec, cid, ports, dirs)
        return self.containers[name]

    def host_dir(self, name: str, mount_path: str) -> Path:
        return self.containers[name].host_dirs[mount_path]

    def stop(self) -> dict[str, int]:
        """Stop every container at once, as the kubelet does; their exit codes."""
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        running = [c for c in self.containers.values() if c.exit_code is None]
        if running:
            podman("stop", "--time", str(grace), *[c.cid for c in running], timeout=grace + 60)
        return {n: c.stop(grace) for n, c in self.containers.items()}

    def remove(self) -> None:
        for c in self.containers.values():
            c.remove()


def wait_for(condition, what: str, timeout: float = 120, alive=None, interval: float = 0.2):
    """Poll `condition` until it returns something true; fail after `timeout` or once `alive()` is false."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if alive is not None and not alive():
            raise AssertionError(f"{what}: the container stopped")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(interval)  # polling the condition, not sleeping in its place


def read_events(path: Path) -> list[dict]:
    """The events a live analyzer wrote so far: its rotated files (events.jsonl.N, oldest first) then
    the current one, complete lines only (it writes through a buffer, so the last may be cut)."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    events = []
    for f in [*rotated, path]:
        try:
            text = f.read_text()
        except FileNotFoundError:
            continue  # rotated meanwhile: the next look finds it under its new name
        events += [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line]
    return events


def bridge_gateway() -> str:
    """The host's address on podman's default network, which containers on it reach the host by."""
    out = podman("network", "inspect", "podman", "--format", "{{range .Subnets}}{{.Gateway}}{{end}}")
    return out.stdout.strip()


# ---- a workload container ----

class ContainerWorkload:
    """A program (a fresh copy of its file, a new inode to the recorder) in a container from the base
    image, calling the provider under its real name; it prints its ready line and waits for /control/go.
    Subclasses say how it is run, what it prints and which TLS file the recorder must probe in it."""

    ready_line = ""
    # the TLS file the recorder must say it probed, by the name the container's processes see
    libraries: tuple[str, ...] = ()

    def __init__(self, server, ca_file: Path, tmp: Path, program: Path, mount: str, command: list[str],
                 env: dict[str, str] | None = None):
        self.control = tmp / "control"
        self.control.mkdir(parents=True)
        copy = tmp / Path(mount).name
        shutil.copy(program, copy)  # with its mode: an executable stays executable
        shutil.copy(ca_file, tmp / "ca.pem")
        env_args = [a for name, value in (env or {}).items() for a in ("--env", f"{name}={value}")]
        out = podman("run", "--detach", *RUN_OPTS, *env_args, "--add-host", f"api.openai.com:{server.host}",
                     "--volume", f"{copy}:{mount}:ro", "--volume", f"{tmp / 'ca.pem'}:/app/ca.pem:ro",
                     "--volume", f"{self.control}:/control", BASE_IMAGE, *command)
        self.cid = out.stdout.strip().splitlines()[-1]
        self.container = PodContainer("workload", {}, self.cid, {}, {})
        wait_for(lambda: self.container.logs().startswith(self.ready_line), "workload ready (TLS loaded)",
                 timeout=60, alive=self.container.running, interval=0.05)
        self.pid = self.container.pid  # the program is the container's first process: its host pid

    def go(self, recorder: PodContainer) -> None:
        """Start calling once the recorder has probed the container's TLS file (its log says so): when
        the process opened it, or before, under another path to the same file (the image layer the
        container's file comes from, or another container's view of it): by its inode."""
        probed = re.compile(rf"new TLS library (\S+) (?:opened by|in) pid {self.pid}\b")
        inodes = {}
        for lib in self.libraries:
            try:
                inodes[os.stat(f"/proc/{self.pid}/root{lib}").st_ino] = lib
            except OSError:
                pass
        same_file = re.compile(r"INFO probed \S+ \([^)]*inode (\d+), lib_id \d+\) in \d+ ms: SSL_write")
        refused = re.compile(rf"library \S+ \((?:opened by|maps of) pid {self.pid}\): essential symbols")

        def attached():
            log = recorder.logs()
            if refused.search(log):
                raise AssertionError(
                    f"the kernel refused the recorder's uprobes on pid {self.pid}'s TLS file. Another uprobe "
                    f"user probes that file with another reference-counter offset (docs/recorder.md, "
                    f"Capabilities, bcc 0.26); other recorders running here: {other_recorders(recorder)}")
            m = probed.search(log)
            same = [inodes[int(i)] for i in same_file.findall(log) if int(i) in inodes]
            return m.group(1) if m else same[0] if same else None

        self.library = wait_for(attached, f"the recorder probing the TLS file of pid {self.pid}", timeout=30,
                                interval=0.1)
        assert self.library in self.libraries, self.library
        (self.control / "go").touch()

    def output(self) -> list[str]:
        """The program's output lines once it has exited, with success."""
        code = int(podman("wait", self.cid, timeout=120).stdout.strip())
        lines = self.container.logs().splitlines()
        assert code == 0, "\n".join(lines[-20:])
        return lines

    def remove(self) -> None:
        self.container.remove()


class Workload(ContainerWorkload):
    """testbed/container_client.py: stdlib Python through the container's own libssl."""

    ready_line = "ready"  # once its libssl is loaded
    libraries = CONTAINER_LIBSSL  # the base image's own file (/lib is /usr/lib)

    def __init__(self, server, ca_file: Path, tmp: Path, calls: int, interval: float = 0.0,
                 prompt_bytes: int = 0):
        super().__init__(server, ca_file, tmp, REPO / "testbed" / "container_client.py", "/app/client.py", [
            "python3", "/app/client.py", f"https://api.openai.com:{server.port}/v1", "/app/ca.pem",
            "--calls", str(calls), "--interval", str(interval), "--go", "/control/go",
            "--stop", "/control/stop", "--prompt-bytes", str(prompt_bytes)])

    def stop(self) -> None:
        (self.control / "stop").touch()

    def result(self) -> dict:
        return json.loads(self.output()[-1])


class GoWorkload(ContainerWorkload):
    """A build of testbed/go/aiclient (tests/helpers/go_programs.py; static, so it runs in the base
    image): Go's own crypto/tls in the program's file, its CA from SSL_CERT_FILE."""

    ready_line = '{"ready": true}'

    def __init__(self, server, ca_file: Path, tmp: Path, program: Path, scenario: str = "basic",
                 tag: str = "go-container"):
        mount = f"/app/{program.name}"
        self.libraries = (mount,)
        super().__init__(server, ca_file, tmp, program, mount, [
            mount, "-base", f"https://api.openai.com:{server.port}", "-scenario", scenario, "-tag", tag,
            "-wait-file", "/control/go"], env={"SSL_CERT_FILE": "/app/ca.pem"})

    def result(self) -> list[dict]:
        """One line per call: marker, model, answer, token counts, protocol, pid (in the container)."""
        return [json.loads(line) for line in self.output()[1:]]


def other_recorders(ours: PodContainer) -> list[str]:
    """oisp-record processes on this machine besides ours (a developer's tests running meanwhile)."""
    found, own = [], ours.pid
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name != str(own) and any(a.endswith(b"oisp-record") for a in argv):
            found.append(f"{proc.name}: {b' '.join(argv[:4]).decode(errors='replace')}")
    return found


# ---- resource use of a container, from its cgroup (v1 controllers, or v2) ----

def cgroup_dirs(pid: int) -> tuple[Path, Path]:
    """(memory directory, cpu accounting directory) of the process's cgroup."""
    v1, v2 = {}, None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if hid == "0":
            v2 = path
        for ctl in controllers.split(","):
            v1[ctl] = path
    if "memory" in v1:
        return Path("/sys/fs/cgroup/memory" + v1["memory"]), Path("/sys/fs/cgroup/cpuacct" + v1["cpuacct"])
    root = Path("/sys/fs/cgroup") / v2.lstrip("/")
    return root, root


@dataclass
class Usage:
    """Memory in bytes at one moment (working set: what the kubelet compares with the limit, that is
    usage less inactive file cache), the peak since the container started, and CPU seconds used."""

    working_set: int
    rss: int
    peak: int
    cpu_seconds: float
    at: float


def usage(pid: int) -> Usage:
    mem, cpu = cgroup_dirs(pid)
    stat = dict(line.split() for line in (mem / "memory.stat").read_text().splitlines())
    now = time.monotonic()
    if (mem / "memory.usage_in_bytes").exists():  # v1
        used = int((mem / "memory.usage_in_bytes").read_text())
        peak = int((mem / "memory.max_usage_in_bytes").read_text())
        inactive, rss = int(stat["total_inactive_file"]), int(stat["total_rss"])
        cpu_s = int((cpu / "cpuacct.usage").read_text()) / 1e9
    else:
        used = int((mem / "memory.current").read_text())
        peak_file = mem / "memory.peak"
        peak = int(peak_file.read_text()) if peak_file.exists() else used
        inactive, rss = int(stat["inactive_file"]), int(stat["anon"])
        cpu_stat = dict(line.split() for line in (cpu / "cpu.stat").read_text().splitlines())
        cpu_s = int(cpu_stat["usage_usec"]) / 1e6
    return Usage(max(0, used - inactive), rss, peak, cpu_s, now)


class Sampler:
    """Each container's memory sampled once a second in a thread: the highest working set and resident
    memory seen (the cgroup's own peak counts page cache, which the kernel reclaims before any limit)."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0):
        self.pids, self.interval = pids, interval
        self.samples: dict[str, list[Usage]] = {n: [] for n in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for n, pid in self.pids.items():
                try:
                    self.samples[n].append(usage(pid))
                except (OSError, KeyError, ValueError):
                    pass  # the container is stopping
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def max_working_set(self, name: str) -> int:
        return max(u.working_set for u in self.samples[name])

    def max_rss(self, name: str) -> int:
        return max(u.rss for u in self.samples[name])


def cpu_share(a: Usage, b: Usage) -> float:
    """CPU used between two readings, as a share of one core."""
    return (b.cpu_seconds - a.cpu_seconds) / (b.at - a.at)
