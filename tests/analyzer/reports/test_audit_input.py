"""The notebooks' input (analyzer/reports/audit_input.py): a DuckDB file opened without ever being written, or
segments analyzed first; the workload names derived from pod names; chart helpers."""

from __future__ import annotations

import hashlib
import subprocess

import polars as pl
import pytest

from analyzer.reports.audit_input import AuditInputError, has_rows, open_audit, time_bucket_seconds
from conftest import BIN, REPO

SAMPLE = REPO / "samples" / "audit" / "segments"


@pytest.fixture(scope="module")
def duckdb_file(tmp_path_factory):
    db = tmp_path_factory.mktemp("audit") / "audit.duckdb"
    subprocess.run([str(BIN / "oisp-analyze"), str(SAMPLE), "--duckdb", str(db), "--content", "hash"],
                   check=True, capture_output=True)
    return db


def test_a_duckdb_file_is_read_only(duckdb_file):
    before = hashlib.sha256(duckdb_file.read_bytes()).hexdigest()
    audit = open_audit(duckdb_file)
    assert audit.database == duckdb_file and audit.segments is None and audit.content is None
    audit.sql("CREATE TEMP VIEW x AS SELECT * FROM ai_calls")
    with pytest.raises(Exception, match="read-only|read only"):
        audit.sql("CREATE TABLE audit.leftover (a INT)")
    audit.con.close()
    assert hashlib.sha256(duckdb_file.read_bytes()).hexdigest() == before


def test_segments_are_analyzed_with_the_content_asked_for(tmp_path):
    audit = open_audit(SAMPLE, content="none", workdir=tmp_path)
    assert audit.content == "none" and len(audit.segments) == len(list(SAMPLE.glob("*.parquet")))
    assert audit.tables() == {"events", "ai_calls", "exchanges", "connections", "processes"}
    texts = audit.sql("SELECT count(*) FROM events WHERE event_json LIKE '%\"content\":%'").fetchall()
    assert texts == [(0,)]  # content none: no prompt or answer text
    assert audit.database.is_relative_to(tmp_path)


def test_segments_given_with_a_duckdb_file(duckdb_file):
    audit = open_audit(duckdb_file, segments=SAMPLE)
    assert audit.segments and all(s.endswith(".parquet") for s in audit.segments)


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(AuditInputError, match="no such file"):
        open_audit(tmp_path / "missing")
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    with pytest.raises(AuditInputError, match="neither a DuckDB file nor a segment"):
        open_audit(text)


@pytest.mark.parametrize("pod, workload", [
    ("support-bot-6d8f9c7b5-k2x9p", "support-bot"),  # Deployment
    ("paper-summarizer-0", "paper-summarizer"),  # StatefulSet
    ("doc-indexer-29104560-x8d2n", "doc-indexer"),  # CronJob
    ("node-agent-7xk2p", "node-agent"),  # DaemonSet
    ("standalone", "standalone"),
    (None, None),
])
def test_workload_of_a_pod(duckdb_file, pod, workload):
    audit = open_audit(duckdb_file)
    assert audit.sql("SELECT workload($p)", {"p": pod}).fetchall()[0][0] == workload
    label = audit.sql("SELECT caller('ns', NULL, $p, 'python')", {"p": pod}).fetchall()[0][0]
    assert label == (f"ns/{workload}" if pod else "(host) python")
    # a recorded workload (segment format 5) wins over the guess from the pod's name
    recorded = audit.sql("SELECT caller('ns', 'the-deployment', $p, 'python')", {"p": pod}).fetchall()[0][0]
    assert recorded == ("ns/the-deployment" if pod else "(host) python")


def test_time_buckets_and_empty_frames(capsys):
    assert time_bucket_seconds(14) == 1
    assert time_bucket_seconds(600) == 15
    assert time_bucket_seconds(7 * 86400) == 21600
    assert 30 * 86400 / time_bucket_seconds(30 * 86400) <= 40
    assert has_rows(pl.DataFrame({"a": [1]}), "rows")
    assert not has_rows(pl.DataFrame({"a": []}), "errors")
    assert "nothing to chart: no errors" in capsys.readouterr().out
