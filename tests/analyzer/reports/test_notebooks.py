"""The audit notebooks (notebooks/*.ipynb) run headless, as a person would run them: on the bundled
sample out of the box (samples/audit/segments), and on a DuckDB file written by `oisp-analyze
--duckdb`. No cell may fail, every chart cell (tagged "chart") must draw an image (the notebooks skip
a chart with "nothing to chart" when its data is empty), secrets stay masked; and the notebooks are
committed without outputs."""

from __future__ import annotations

import json
import re
import subprocess

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import BIN, REPO
from testbed.audit_workload import FAKE_AWS_KEY, FAKE_EMAIL, KEY

NOTEBOOKS = REPO / "notebooks"
NAMES = ("usage-audit", "prompt-audit", "capture-health")
SAMPLE = REPO / "samples" / "audit" / "segments"


def tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


def execute(name: str, **params) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel from its own directory, with `params` replacing the
    assignments of its parameters cell (as papermill would)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in tags(c))
    for key, value in params.items():
        cell.source, n = re.subn(rf"^{key} = .*$", f"{key} = {value!r}", cell.source, flags=re.M)
        assert n == 1, f"{name} has no parameter {key}"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs_text(nb) -> str:
    return json.dumps([c.get("outputs", []) for c in nb.cells])


def check_charts(nb, skipped: set[str] = frozenset()) -> None:
    """No error output; each chart cell drew at least one image and said nothing was missing, except
    the cells whose source mentions one of `skipped` (sections the input cannot feed)."""
    charts = [c for c in nb.cells if "chart" in tags(c)]
    assert len(charts) >= 5
    for cell in nb.cells:
        assert not [o for o in cell.get("outputs", []) if o.output_type == "error"], cell.source[:200]
    for cell in charts:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        if any(s in cell.source for s in skipped):
            assert not images, cell.source[:200]
            continue
        assert images, f"chart drew nothing: {printed.strip()}\n{cell.source[:300]}"
        assert "nothing to chart" not in printed, printed


@pytest.fixture(scope="module")
def on_sample():
    return {name: execute(name) for name in NAMES}


@pytest.fixture(scope="module")
def sample_duckdb(tmp_path_factory):
    db = tmp_path_factory.mktemp("nb") / "audit.duckdb"
    subprocess.run([str(BIN / "oisp-analyze"), str(SAMPLE), "--duckdb", str(db), "--content", "full"],
                   check=True, capture_output=True)
    return db


def test_committed_without_outputs_and_with_a_parameters_cell():
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == sorted(NAMES)
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name} has outputs"
        params = [c for c in code if "parameters" in tags(c)]
        assert len(params) == 1 and params[0] is code[0], f"{name}: the first code cell is the parameters"
        assert 'INPUT = "../samples/audit/segments"' in params[0].source


@pytest.mark.parametrize("name", NAMES)
def test_runs_on_the_sample_and_every_chart_has_data(on_sample, name):
    check_charts(on_sample[name])


def test_prompt_audit_shows_secrets_only_masked(on_sample):
    text = outputs_text(on_sample["prompt-audit"])
    assert "j***@***.com" in text and FAKE_AWS_KEY[:4] + "*" * 12 + FAKE_AWS_KEY[-4:] in text
    assert "Acme Cloud" in text and "lookup_order" in text  # the system prompt and tool calls are shown
    for nb in on_sample.values():
        raw = outputs_text(nb)
        assert FAKE_EMAIL not in raw and FAKE_AWS_KEY not in raw and KEY not in raw


def test_usage_audit_counts_what_the_sample_holds(on_sample):
    text = outputs_text(on_sample["usage-audit"])
    for expected in ("support/support-bot", "research/paper-summarizer", "search/doc-indexer",
                     "platform/llm-gateway", "aws_bedrock", "cohere", "rate_limited_pct"):
        assert expected in text, expected


def test_usage_and_capture_health_on_a_duckdb_file(sample_duckdb):
    check_charts(execute("usage-audit", INPUT=str(sample_duckdb)))
    # Without the segments, the sections that read them say so; the rest come from the tables.
    health = execute("capture-health", INPUT=str(sample_duckdb))
    check_charts(health, skipped={"if SEG is not None"})
    assert "No segments given" in outputs_text(health)
