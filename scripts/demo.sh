#!/usr/bin/env bash
# `make run`: real AI clients (the openai, anthropic and google-genai SDKs, httpx over HTTP/2, curl,
# node) call fake providers under their real host names while the eBPF recorder runs; the analyzer
# turns the segments into OISP events and a DuckDB file, and a usage summary is printed.
# Where this machine cannot load eBPF programs, say why in one line and replay the sample segments
# shipped in samples/segments/ (recorded the same way) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-out/demo}
rm -rf "$OUT"
mkdir -p "$OUT"

if reason=$($BIN/oisp-record --check 2>&1 >/dev/null); then
    echo "== recording real AI clients against fake providers (work dir: $OUT/run)"
    $BIN/python -m testbed.e2e_run "$OUT/run" --quick
    grep "final totals" "$OUT/run/recorder.log" | sed 's/.*final totals/recorder totals:/' || true
    SEGMENTS=$OUT/run/segments
else
    echo "eBPF is not available here ($(echo "$reason" | sed -n 's/.*cannot record here: //p')): replaying samples/segments"
    SEGMENTS=samples/segments
fi
echo "== analyzing $SEGMENTS"
$BIN/oisp-analyze "$SEGMENTS" --out "$OUT/events.jsonl" --duckdb "$OUT/audit.duckdb"
echo "== AI usage"
$BIN/python scripts/show_summary.py "$OUT/audit.duckdb"
echo
echo "events:  $OUT/events.jsonl"
echo "tables:  $OUT/audit.duckdb (events, ai_calls, exchanges, connections, processes)"
