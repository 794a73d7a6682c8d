"""A readable usage summary from the DuckDB file `oisp-analyze --duckdb` writes: per provider and
model, calls, tokens, errors, latency and time to first token percentiles, and who called."""

from __future__ import annotations

from pathlib import Path

import duckdb

from analyzer.reports.text_table import table

QUERY = """
SELECT provider_id AS provider, coalesce(model_requested, '?') AS model, count(*) AS calls,
       sum(prompt_tokens) AS tokens_in, sum(completion_tokens) AS tokens_out,
       count(*) FILTER (success IS NOT TRUE) AS errors,
       quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms,
       quantile_cont(ttft_ms, 0.5) AS ttft_p50_ms, quantile_cont(ttft_ms, 0.95) AS ttft_p95_ms,
       sum(cost_usd) AS cost_usd
FROM ai_calls GROUP BY ALL ORDER BY provider, model
"""
CALLERS = """
SELECT coalesce(pod_name, pod_uid, '(no pod)') AS pod, process_name, count(*) AS calls,
       string_agg(DISTINCT provider_id, ', ' ORDER BY provider_id) AS providers
FROM ai_calls GROUP BY ALL ORDER BY calls DESC, pod, process_name
"""
COLUMNS = ["provider", "model", "calls", "tokens in", "tokens out", "errors", "p50 ms", "p95 ms",
           "ttft p50", "ttft p95", "cost $"]


def summarize(db_path: Path) -> str:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "ai_calls" not in tables:
            return "no AI calls in these segments"
        rows = con.execute(QUERY).fetchall()
        callers = con.execute(CALLERS).fetchall()
    finally:
        con.close()
    if not rows:
        return "no AI calls in these segments"
    lines = table(COLUMNS, rows)
    lines += ["", "who called:"] + ["  " + line for line in table(["pod", "process", "calls", "providers"],
                                                                  callers)]
    return "\n".join(lines)
