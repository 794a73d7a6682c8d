#!/usr/bin/env bash
# `make run`: record a short real TLS workload with the eBPF recorder and show what was captured.
# Where this machine cannot load eBPF programs, say why in one line and replay the sample segments
# shipped in samples/segments/ instead.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-out/demo}

if reason=$($BIN/oisp-record --check 2>&1 >/dev/null); then
    rm -rf "$OUT"
    mkdir -p "$OUT"
    echo "== recording (log: $OUT/recorder.log)"
    $BIN/oisp-record --segments-dir "$OUT/segments" --ready-file "$OUT/ready.json" \
        >"$OUT/recorder.log" 2>&1 &
    rec=$!
    trap 'kill $rec 2>/dev/null || true' EXIT
    until [ -e "$OUT/ready.json" ]; do
        kill -0 $rec 2>/dev/null || { cat "$OUT/recorder.log"; exit 1; }
        sleep 0.1
    done
    echo "== running the workload"
    $BIN/python scripts/demo_workload.py "$OUT"
    kill -TERM $rec
    wait $rec
    trap - EXIT
    grep "final totals" "$OUT/recorder.log" || true
    SEGMENTS=$OUT/segments
else
    echo "eBPF is not available here ($(echo "$reason" | sed -n 's/.*cannot record here: //p')): replaying samples/segments"
    SEGMENTS=samples/segments
fi
echo "== what was captured ($SEGMENTS)"
$BIN/oisp-analyze "$SEGMENTS"
mkdir -p "$OUT"
echo "== HTTP exchanges rebuilt from it ($OUT/exchanges.jsonl)"
$BIN/oisp-analyze "$SEGMENTS" --exchanges "$OUT/exchanges.jsonl"
$BIN/python scripts/show_exchanges.py "$OUT/exchanges.jsonl"
