"""Security lint of the built manifests, the test Job and the Containerfile with checkov: no failed
check, and every skipped one carries its reason. checkov is not a project dependency (it would
downgrade boto3 and botocore, which the SDK tests use): it runs when installed, e.g. in its own venv
(manifests/README.md, "Security lint")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from helpers.deploy_manifests import MANIFESTS, OVERLAYS, build, kubectl

CHECKOV = os.environ.get("CHECKOV") or shutil.which("checkov") or next(
    (str(p) for p in (Path(__file__).resolve().parents[2] / ".venv-checkov/bin/checkov",
                      Path("/opt/checkov/bin/checkov")) if p.exists()), None)

# scripts/setup.sh installs checkov into .venv-checkov: in CI its absence is a failure, not a skip
pytestmark = pytest.mark.skipif((CHECKOV is None or kubectl() is None) and os.environ.get("CI") != "true",
                                reason="checkov or kubectl not installed")


def checkov(target: Path, framework: str) -> list[dict]:
    assert CHECKOV and kubectl(), "checkov or kubectl missing: scripts/setup.sh installs checkov"
    out = subprocess.run([CHECKOV, "-d", str(target), "--framework", framework, "--output", "json",
                          "--skip-download"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert out.returncode in (0, 1), out.stderr[-2000:]
    report = json.loads(out.stdout)
    return report if isinstance(report, list) else [report]


def results(reports: list[dict], key: str) -> list[dict]:
    return [r for report in reports for r in report.get("results", {}).get(key, [])]


def test_manifests_pass_checkov_or_say_why_not(tmp_path):
    import yaml

    for overlay in OVERLAYS:
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(build(overlay)))
    shutil.copy(MANIFESTS / "test-app.yaml", tmp_path / "test-app.yaml")
    reports = checkov(tmp_path, "kubernetes")
    failed = results(reports, "failed_checks")
    assert failed == [], [(f["check_id"], f["resource"]) for f in failed]
    passed, skipped = results(reports, "passed_checks"), results(reports, "skipped_checks")
    assert len(passed) > 100  # it really looked at the objects
    for s in skipped:
        reason = s.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) > 40, (s["check_id"], s["resource"], reason)
    # the skips are those of the sensor's DaemonSet (both overlays) and the test image's tag
    assert sorted({s["check_id"] for s in skipped}) == [
        "CKV_K8S_15", "CKV_K8S_17", "CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_35", "CKV_K8S_40", "CKV_K8S_43"]


def test_containerfile_passes_checkov_or_says_why_not(tmp_path):
    # checkov recognizes a Dockerfile by its name
    shutil.copy(REPO / "Containerfile", tmp_path / "Dockerfile")
    reports = checkov(tmp_path, "dockerfile")
    assert results(reports, "failed_checks") == []
    assert len(results(reports, "passed_checks")) > 10
    for s in results(reports, "skipped_checks"):
        assert len(s.get("check_result", {}).get("suppress_comment", "")) > 20, s["check_id"]
