"""The deployment manifests as the cluster would get them: the overlays built with `kubectl kustomize`,
and helpers to find objects, containers and what they mount. Shared by the manifest tests."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import click
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OVERLAYS = ("kubernetes", "openshift")
NAMESPACE = "oisp-sensor"


def kubectl() -> str | None:
    return shutil.which("kubectl")


@functools.cache
def build(overlay: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize manifests/OVERLAY` renders (what `kubectl apply -k` applies)."""
    out = subprocess.run([kubectl(), "kustomize", str(MANIFESTS / overlay)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def app_objects() -> tuple[dict, ...]:
    return tuple(doc for doc in yaml.safe_load_all((MANIFESTS / "test-app.yaml").read_text()) if doc)


def one(objects, kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} objects"
    return found[0]


def daemonset(overlay: str) -> dict:
    return one(build(overlay), "DaemonSet", "oisp-sensor")


def pod_spec(overlay: str) -> dict:
    return daemonset(overlay)["spec"]["template"]["spec"]


def container(spec: dict, name: str) -> dict:
    found = [c for c in spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"no single container {name}"
    return found[0]


def volume(spec: dict, name: str) -> dict:
    found = [v for v in spec["volumes"] if v["name"] == name]
    assert len(found) == 1, f"no single volume {name}"
    return found[0]


def mount_for(spec: dict, container_name: str, path: str) -> tuple[dict, dict] | None:
    """The (volumeMount, volume) that holds `path` in the container (longest mount path wins)."""
    best = None
    for m in container(spec, container_name).get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if (path == mp or path.startswith(mp + "/")) and (best is None or len(mp) > len(best["mountPath"])):
            best = m
    return (best, volume(spec, best["name"])) if best else None


def config_text(overlay: str) -> str:
    """The config file as the containers read it, from the ConfigMap the DaemonSet mounts."""
    return configmap_file(overlay, "config.yaml")


def configmap_file(overlay: str, name: str) -> str:
    """A file of the ConfigMap the DaemonSet mounts (at /etc/oisp-sensor), as the containers read it."""
    spec = pod_spec(overlay)
    cm_name = volume(spec, "config")["configMap"]["name"]
    return one(build(overlay), "ConfigMap", cm_name)["data"][name]


def option_value(args: list[str], flag: str) -> str | None:
    """The value after `flag` in a container's args (None when the flag is absent)."""
    return args[args.index(flag) + 1] if flag in args else None


# Options agreed with the live-mode/metrics work (issue 7) and written into the DaemonSet before that
# work landed: while absent they are dropped (and the tests say so), any other unknown option fails.
PENDING_OPTIONS = {("oisp-analyze", "--follow"), ("oisp-analyze", "--metrics-port"),
                   ("oisp-record", "--metrics-port")}
FLAGS = {"--follow"}  # options without a value


def click_command(program: str) -> click.Command:
    from analyzer.cli import analyze_command
    from recorder.cli import main as record_command
    from recorder.shipping.cli import main as ship_command

    commands = {"oisp-record": record_command, "oisp-analyze": analyze_command, "oisp-ship": ship_command}
    return commands[program]


def split_pending(program: str, args: list[str]) -> tuple[list[str], list[str]]:
    """(args without the agreed options the program does not have yet, those options). Asserts that
    every other option is a real one of the program."""
    known = {opt for p in click_command(program).params for opt in p.opts}
    args, pending = list(args), []
    for token in [t for t in args if t.startswith("-")]:
        if token in known:
            continue
        assert (program, token) in PENDING_OPTIONS, f"{program} has no option {token}"
        pending.append(token)
        i = args.index(token)
        del args[i:i + (1 if token in FLAGS else 2)]
    return args, pending
