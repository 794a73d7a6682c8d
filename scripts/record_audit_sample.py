"""Re-record samples/audit/ with the real recorder: the data the audit notebooks (notebooks/) run on.

usage (root, eBPF): .venv/bin/python scripts/record_audit_sample.py [--out samples/audit]

Runs testbed/audit_sample.py (five pods in four namespaces, real SDK clients, fake providers under
their real host names, pod names and workloads from a fake API server), then replaces OUT/segments/
with the new segments (mode 0644, so that anyone can run the notebooks on them) and OUT/truth.json
with what the clients saw. Prints what the analyzer finds in them. Review the notebooks' charts afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from analyzer.reports.audit_input import open_audit  # noqa: E402
from testbed import audit_sample  # noqa: E402

BIN = Path(sys.executable).parent
SUMMARY = """
SELECT coalesce(pod_namespace, '-') AS namespace, coalesce(pod_name, '-') AS pod, count(*) AS calls,
       string_agg(DISTINCT provider_id, ', ' ORDER BY provider_id) AS providers,
       count(*) FILTER (streaming) AS streaming, count(*) FILTER (success IS NOT TRUE) AS failed_or_unknown,
       count(*) FILTER (completeness = 'partial') AS partial
FROM ai_calls GROUP BY ALL ORDER BY namespace, pod
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "samples" / "audit")
    args = parser.parse_args()
    check = subprocess.run([str(BIN / "oisp-record"), "--check"], capture_output=True, text=True)
    if check.returncode != 0:
        print(f"cannot record here: {check.stderr.strip()}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="audit-sample-") as tmp:
        run = audit_sample.run(Path(tmp))
        segments = args.out / "segments"
        shutil.rmtree(segments, ignore_errors=True)
        segments.mkdir(parents=True)
        for f in sorted(run.segments.glob("*.parquet")):
            shutil.copyfile(f, segments / f.name)
            (segments / f.name).chmod(0o644)
        segments.chmod(0o755)
    (args.out / "truth.json").write_text(json.dumps(run.truth, indent=1, sort_keys=True) + "\n")
    audit = open_audit(segments)
    print(audit.sql(SUMMARY))
    size = sum(f.stat().st_size for f in segments.iterdir())
    print(f"{len(list(segments.iterdir()))} segment(s), {size} bytes in {segments}; "
          f"the API server was asked {len(run.api_requests)} time(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
