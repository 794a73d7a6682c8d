"""manifests/fleet/daskcluster.yaml, the fleet analysis's example for Kubernetes: its Kubernetes objects
and the DaskCluster's pods validate against the API schemas, and what they run is what the code takes
(the fleet command's options, the config file, the workers' settings the analysis requires), so the
example and the code cannot drift apart. No cluster needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from analyzer.config import load
from analyzer.fleet.command import fleet_command
from conftest import HASH_KEY, REPO

MANIFEST = REPO / "manifests" / "fleet" / "daskcluster.yaml"
VERSION = kubernetes_validate.latest_version()


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in docs}


def pod(spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def test_objects_validate(objects):
    assert sorted(objects) == ["ConfigMap", "DaskCluster", "Job"]
    for kind in ("ConfigMap", "Job"):
        kubernetes_validate.validate(objects[kind], VERSION, strict=True)
    cluster = objects["DaskCluster"]["spec"]
    for part in ("worker", "scheduler"):  # the operator makes pods of these specs
        kubernetes_validate.validate(pod(cluster[part]["spec"]), VERSION, strict=True)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": cluster["scheduler"]["service"]}
    kubernetes_validate.validate(service, VERSION, strict=True)


def test_the_job_runs_the_fleet_command_against_the_clusters_scheduler(objects):
    job = objects["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"][:2] == ["oisp-analyze", "fleet"]
    ctx = fleet_command.make_context("oisp-analyze fleet", list(job["args"][2:]))  # every option exists
    meta = objects["DaskCluster"]["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    assert ctx.params["scheduler"] == f"tcp://{name}-scheduler.{namespace}.svc:8786"  # the operator's Service
    assert ctx.params["source_url"].startswith("s3://") and ctx.params["out_url"].startswith("s3://")
    mounts = {m["mountPath"] for m in job["volumeMounts"]}
    assert str(ctx.params["config_file"].parent) in mounts


def test_the_config_is_one_the_analyzer_takes(objects, tmp_path):
    text = objects["ConfigMap"]["data"]["config.yaml"]
    key_path = yaml.safe_load(text)["analyzer"]["hash_key_file"]
    job = objects["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert any(key_path.startswith(m["mountPath"] + "/") for m in job["volumeMounts"])
    path = tmp_path / "config.yaml"
    path.write_text(text.replace(key_path, str(HASH_KEY)))
    assert load(path).hash_key == HASH_KEY.read_bytes().strip()


def test_the_workers_are_as_the_analysis_needs(objects):
    """One thread per worker, the profiler off (analyzer/fleet/tasks.py refuses it otherwise), the
    sensor's own image for every pod (the client and the workers must run the same code)."""
    cluster = objects["DaskCluster"]["spec"]
    worker = cluster["worker"]["spec"]["containers"][0]
    args = worker["args"]
    assert args[:2] == ["dask", "worker"] and args[args.index("--nthreads") + 1] == "1"
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] == "False"
    daemonset = next(d for d in yaml.safe_load_all((REPO / "manifests/base/daemonset.yaml").read_text())
                     if d and d["kind"] == "DaemonSet")
    image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
    pods = [cluster["worker"]["spec"], cluster["scheduler"]["spec"],
            objects["Job"]["spec"]["template"]["spec"]]
    assert {c["image"] for p in pods for c in p["containers"]} == {image}


def test_the_job_passes_checkov_or_says_why_not(tmp_path):
    """The security lint the sensor's manifests pass (tests/deploy/test_manifests_lint.py), on this one."""
    places = (REPO / ".venv-checkov/bin/checkov", Path("/opt/checkov/bin/checkov"))
    checkov = os.environ.get("CHECKOV") or shutil.which("checkov") or next(
        (str(p) for p in places if p.exists()), None)
    if checkov is None:
        pytest.skip("checkov not installed (scripts/setup.sh installs it)")
    shutil.copy(MANIFEST, tmp_path / MANIFEST.name)
    out = subprocess.run([checkov, "-d", str(tmp_path), "--framework", "kubernetes", "--output", "json",
                          "--skip-download"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(out.stdout)["results"]
    assert report["failed_checks"] == []
    assert len(report["passed_checks"]) > 50
    skipped = report["skipped_checks"]
    assert sorted(s["check_id"] for s in skipped) == ["CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_43"]
    assert all(len(s["check_result"]["suppress_comment"]) > 40 for s in skipped)
