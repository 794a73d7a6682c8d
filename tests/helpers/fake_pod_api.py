"""A fake Kubernetes pod list server (API server or kubelet) over real HTTPS, for the pod metadata
tests of the recorder and of discovery."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-token"
UID_A = "8d2f6c1e-4b3a-4f5e-9d8c-7b6a5f4e3d2c"
UID_B = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
UID_NEW = "99999999-aaaa-4bbb-8ccc-dddddddddddd"
CID_APP = "3f1c2a9d8b7e6f5a4c3b2a1908f7e6d5c4b3a2918f7e6d5c4b3a2918f7e6d5c4"
CID_INIT = "0a" * 32
CID_SIDECAR = "0b" * 32
CID_UI = "0c" * 32
CID_UI_OLD = "0d" * 32
CID_NEW = "0e" * 32


def container_status(name: str, cid: str | None, **extra) -> dict:
    status = {"name": name, "ready": True, "restartCount": 0, "image": f"registry.local/{name}:1",
              "imageID": f"registry.local/{name}@sha256:{'1' * 64}", "started": True, **extra}
    if cid:
        status["containerID"] = cid
    return status


def pod(uid: str, name: str, namespace: str, labels: dict, statuses: dict, sa: str = "default") -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "48213",
                     "creationTimestamp": "2026-05-09T07:35:25Z", "labels": labels},
        "spec": {"nodeName": "node-a", "serviceAccountName": sa,
                 "containers": [{"name": s["name"], "image": s["image"]}
                                for s in statuses["containerStatuses"]]},
        "status": {"phase": "Running", "podIP": "10.244.1.7", "qosClass": "Burstable", **statuses},
    }


POD_LIST = {
    "kind": "PodList",
    "apiVersion": "v1",
    "metadata": {"resourceVersion": "48300"},
    "items": [
        pod(UID_A, "openai-client-7d9f8b6c5-x2k4p", "ml",
             {"app.kubernetes.io/name": "openai-client", "pod-template-hash": "7d9f8b6c5"},
             {"initContainerStatuses": [container_status("fetch-model", f"containerd://{CID_INIT}")],
              "containerStatuses": [container_status("app", f"containerd://{CID_APP}"),
                                    container_status("envoy", f"containerd://{CID_SIDECAR}")]},
             sa="openai-client"),
        pod(UID_B, "chat-ui-0", "web", {"app": "chat-ui"},
             {"containerStatuses": [container_status("ui", f"cri-o://{CID_UI}", restartCount=1, lastState={
                 "terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": f"cri-o://{CID_UI_OLD}"}})]}),
        # Scheduled but not started: no container ids yet.
        {"metadata": {"name": "pending-0", "namespace": "web", "uid": "77777777-7777-4777-8777-777777777777"},
         "spec": {"nodeName": "node-a"},
         "status": {"phase": "Pending", "containerStatuses": [{"name": "main", "state": {"waiting": {}}}]}},
    ],
}


class PodApi:
    """A threaded HTTPS server answering every GET with `status` and `body`, or 401 for a wrong token.
    It listens once constructed, so clients may connect at once (the backlog holds them until the
    serving thread accepts)."""

    def __init__(self, pki, body: bytes = b"", status: int = 200):
        self.body = body or json.dumps(POD_LIST).encode()
        self.status = status
        self.content_length: str | None = None  # overrides the real length when set
        self.paths: list[str] = []
        self.tokens: list[str | None] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                api.paths.append(self.path)
                api.tokens.append(self.headers.get("Authorization"))
                status, body = api.status, api.body
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status, body = 401, b'{"kind":"Status","message":"Unauthorized","code":401}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if api.content_length != "omit":
                    self.send_header("Content-Length", api.content_length or str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = pki.server_context().wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def requests(self) -> int:
        return len(self.paths)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
