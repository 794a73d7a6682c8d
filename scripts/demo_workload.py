"""A short, real TLS workload for `make run`: an HTTPS server on loopback (Python ssl), a keep-alive
Python client posting a chat-shaped JSON request and a large one, and curl.

usage: python scripts/demo_workload.py WORKDIR
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.https_server import HttpsServer  # noqa: E402
from testbed.pki import make_pki  # noqa: E402


def main() -> None:
    workdir = Path(sys.argv[1])
    pki = make_pki(workdir / "pki")
    server = HttpsServer(
        pki.server_context(),
        body_for=lambda path, body: json.dumps({"path": path, "received_bytes": len(body)}).encode(),
    )
    try:
        conn = http.client.HTTPSConnection("localhost", server.port, context=pki.client_context())
        chat = {"model": "demo-model", "messages": [{"role": "user", "content": "Say hello."}]}
        for body in (json.dumps(chat).encode(), b"x" * 300_000):
            conn.request("POST", "/v1/chat/completions", body=body,
                         headers={"content-type": "application/json"})
            print("python:", conn.getresponse().read().decode())
        conn.close()
        out = subprocess.run(
            ["curl", "-sS", "--http1.1", "--cacert", str(pki.ca_file), f"{server.url}/health"],
            capture_output=True, text=True, check=True,
        )
        print("curl:", out.stdout)
    finally:
        server.close()


if __name__ == "__main__":
    main()
