"""How fast does oisp-ship move segments to an S3 server, and how much memory does it take?

Publishes COUNT segments of about SIZE_MB each with the recorder's own writer (incompressible data,
so the Parquet files are as large as asked), starts moto's S3 server on this machine, and runs
`oisp-ship --once` under /usr/bin/time: every segment hashed, uploaded, verified and deleted. Reports
the wall time, MB/s end to end and the shipper's peak RSS. moto keeps objects in memory and is
itself Python: a real store on a network is the other bound.

Usage: .venv/bin/python bench/upload_throughput.py [COUNT] [SIZE_MB]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.moto_server import CREDENTIALS, MotoServer  # noqa: E402
from helpers.shipping_inputs import Recorder  # noqa: E402

BIN = Path(sys.executable).parent


def main(count: int, size_mb: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="oisp-upload-bench-"))
    segments = work / "segments"
    segments.mkdir(mode=0o700)
    rows = 100
    paths = Recorder(segments).publish(count, rows=rows, size=int(size_mb * 1e6 / rows))
    total = sum(p.stat().st_size for p in paths)
    server = MotoServer()
    server.start()
    try:
        server.client().create_bucket(Bucket="bench")
        config = work / "config.yaml"
        upload = {"enabled": True, "bucket": "bench", "endpoint_url": server.url, "region": "us-east-1"}
        config.write_text(yaml.safe_dump({"recorder": {"segments_dir": str(segments)}, "upload": upload}))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
               "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"]}
        start = time.monotonic()
        command = [str(BIN / "oisp-ship"), "--config", str(config), "--once"]
        run = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
        seconds = time.monotonic() - start
    finally:
        server.stop()
    if run.returncode != 0:
        sys.exit(run.stderr[-3000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    per_segment = [float(s) for s in re.findall(r"in ([\d.]+) s, verified", run.stderr)]
    left = list(segments.glob("*.parquet"))
    print(f"{count} segments, {total / 1e6:.1f} MB: {seconds:.2f} s with start-up, "
          f"{total / 1e6 / seconds:.0f} MB/s end to end (hashing included); upload and verification "
          f"{min(per_segment):.2f}-{max(per_segment):.2f} s "
          f"({total / 1e6 / sum(per_segment):.0f} MB/s); peak RSS {rss_kb / 1024:.0f} MiB; "
          f"{len(left)} segments left locally")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4, float(sys.argv[2]) if len(sys.argv) > 2 else 4)
