"""The fake providers over plaintext HTTP (HTTP/1.1 and h2c), as a process of its own: a model server in
another network namespace or pod (tests/ebpf/test_plaintext.py). Every exchange is logged to
WORKDIR/server-truth.jsonl.

Usage: python -m testbed.plain_server WORKDIR HOST PORT (0: any free port)
Prints {"ready": true, "pid": ..., "port": ...} once it accepts connections, and serves until stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import fake_providers
from .ground_truth import GroundTruthLog, recording
from .hypercorn_server import HypercornServer


def main() -> None:
    workdir, host, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    workdir.mkdir(parents=True, exist_ok=True)
    log = GroundTruthLog(workdir / "server-truth.jsonl")
    server = HypercornServer(None, workdir, app=recording(fake_providers.app, log), port=port, host=host)
    print(json.dumps({"ready": True, "pid": os.getpid(), "port": server.port}), flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.close()


if __name__ == "__main__":
    main()
