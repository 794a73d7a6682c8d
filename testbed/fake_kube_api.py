"""A fake Kubernetes API server over real HTTPS, serving real Kubernetes JSON: the node's pods as a list
and as a watch stream (chunked JSON lines, as the API server streams them), ReplicaSets and Jobs by
name. The recorder's pod watch (recorder/identity/pods.py) talks to it through lightkube, as it talks
to a real API server. Every request is recorded with its verb, so a test can check that the
recorder uses exactly the verbs its ClusterRole grants.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CONTROLLER_API = {"ReplicaSet": "apps/v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1",
                  "DaemonSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}


def owner_ref(kind: str, name: str) -> dict:
    return {"apiVersion": CONTROLLER_API.get(kind, "v1"), "kind": kind, "name": name,
            "uid": f"00000000-0000-4000-8000-{abs(hash((kind, name))) % 10**12:012d}",
            "controller": True, "blockOwnerDeletion": True}


def pod(uid: str, name: str, namespace: str, node: str, *, containers: dict[str, str | None],
        images: dict[str, str] | None = None, labels: dict | None = None, service_account: str = "default",
        owner: tuple[str, str] | None = None, resource_version: str = "1") -> dict:
    """A v1 Pod as the API server returns it. `containers`: name -> runtime container id (containerd://...),
    None for one not started yet."""
    images = images or {}

    def image(container: str) -> str:
        return images.get(container, f"registry.local/{container}:1")

    meta = {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": resource_version,
            "creationTimestamp": "2026-12-01T07:35:25Z", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [owner_ref(*owner)]
    return {
        "kind": "Pod", "apiVersion": "v1", "metadata": meta,
        "spec": {"nodeName": node, "serviceAccountName": service_account, "restartPolicy": "Always",
                 "containers": [{"name": c, "image": image(c)} for c in containers]},
        "status": {"phase": "Running", "podIP": "10.244.1.7", "qosClass": "BestEffort", "containerStatuses": [
            {"name": c, "ready": cid is not None, "restartCount": 0, "image": image(c), "imageID": "",
             **({"containerID": cid} if cid else {"state": {"waiting": {}}})}
            for c, cid in containers.items()]},
    }


def controller(kind: str, name: str, namespace: str, owner: tuple[str, str] | None) -> dict:
    """A ReplicaSet or Job as the API server returns it (its spec's required fields included)."""
    meta = {"name": name, "namespace": namespace, "resourceVersion": "7",
            "uid": f"11111111-0000-4000-8000-{abs(hash(name)) % 10**12:012d}"}
    if owner:
        meta["ownerReferences"] = [owner_ref(*owner)]
    labels = {"app": name}
    template = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "registry.local/main:1"}]}}
    if kind == "ReplicaSet":
        spec = {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}
        status = {"replicas": 1}
    else:
        template["spec"]["restartPolicy"] = "Never"
        spec, status = {"parallelism": 1, "completions": 1, "backoffLimit": 6, "template": template}, {}
    return {"kind": kind, "apiVersion": CONTROLLER_API[kind], "metadata": meta, "spec": spec,
            "status": status}


def _status(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code}).encode()


class FakeKubeApi:
    """HTTPS on 127.0.0.1, a bearer token checked. `pods` (uid -> pod) is what a list or a new watch
    starts from; `event(type, pod)` changes it and streams the event to every open watch."""

    def __init__(self, pki, token: str, node: str):
        self.token = token
        self.node = node
        self.pods: dict[str, dict] = {}
        self.controllers: dict[tuple[str, str, str], dict] = {}  # (kind, namespace, name) -> object
        self.requests: list[tuple[str, str]] = []  # (verb, resource): ("watch", "pods"), ("get", "jobs")
        self.forbidden: set[str] = set()  # resources answered with 403 ("replicasets", "pods")
        self.expire_next_watch = False  # answer the next watch that names a resourceVersion with 410
        self._version = 100
        self._lock = threading.Lock()
        self._watchers: list[queue.Queue] = []
        self._history: list[dict] = []  # every event, replayed to a watch that resumes from a version
        self.closed = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                api._serve(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = pki.server_context().wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    # ---- the cluster's state ------------------------------------------------------------------
    def add_controller(self, kind: str, name: str, namespace: str, owner: tuple[str, str] | None) -> None:
        self.controllers[(kind, namespace, name)] = controller(kind, name, namespace, owner)

    def event(self, event_type: str, obj: dict) -> None:
        with self._lock:
            self._version += 1
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = str(self._version)
            if event_type == "DELETED":
                self.pods.pop(obj["metadata"]["uid"], None)
            else:
                self.pods[obj["metadata"]["uid"]] = obj
            self._history.append({"type": event_type, "object": obj})
            for q in self._watchers:
                q.put({"type": event_type, "object": obj})

    def end_watches(self) -> None:
        """End every open watch stream, as the API server does at its timeout."""
        with self._lock:
            for q in self._watchers:
                q.put(None)

    # ---- serving ------------------------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        watch = query.get("watch") in ("true", "1")
        segments = parts.path.strip("/").split("/")
        verb = "watch" if watch else ("list" if segments[-1] == "pods" else "get")
        resource = "pods" if segments[-1] == "pods" else (segments[-2] if len(segments) >= 2 else "")
        self.requests.append((verb, resource))
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(h, 401, _status(401, "Unauthorized", "Unauthorized"))
        if resource in self.forbidden:
            who = "system:serviceaccount:oisp:oisp-sensor"
            return self._send(h, 403, _status(403, "Forbidden", f'{resource} is forbidden: User "{who}" '
                                              f"cannot {verb} resource"))
        if parts.path == "/api/v1/pods":
            if query.get("fieldSelector") != f"spec.nodeName={self.node}":
                return self._send(h, 400, _status(400, "BadRequest", "the fake serves one node's pods"))
            return self._watch(h, query) if watch else self._list(h)
        # /apis/GROUP/VERSION/namespaces/NS/RESOURCE/NAME
        if len(segments) == 7 and segments[0] == "apis" and segments[3] == "namespaces":
            kind = {"replicasets": "ReplicaSet", "jobs": "Job"}.get(segments[5])
            obj = self.controllers.get((kind, segments[4], segments[6])) if kind else None
            if obj is not None:
                return self._send(h, 200, json.dumps(obj).encode())
            return self._send(h, 404, _status(404, "NotFound", f'{segments[5]} "{segments[6]}" not found'))
        return self._send(h, 404, _status(404, "NotFound", "the server could not find the resource"))

    def _list(self, h) -> None:
        with self._lock:
            body = {"kind": "PodList", "apiVersion": "v1", "items": list(self.pods.values()),
                    "metadata": {"resourceVersion": str(self._version)}}
        self._send(h, 200, json.dumps(body).encode())

    def _watch(self, h, query: dict) -> None:
        q: queue.Queue = queue.Queue()
        since = query.get("resourceVersion")
        with self._lock:
            if since and self.expire_next_watch:  # as the watch cache says it: an ERROR event, then the end
                self.expire_next_watch = False
                expired = _status(410, "Expired", "too old resource version")
                q.put({"type": "ERROR", "object": json.loads(expired)})
                q.put(None)
            elif since:  # every event after that version, then the new ones
                for item in self._history:
                    if int(item["object"]["metadata"]["resourceVersion"]) > int(since):
                        q.put(item)
            else:  # the current state first, as synthetic ADDED events
                for obj in self.pods.values():
                    q.put({"type": "ADDED", "object": obj})
            self._watchers.append(q)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 300)
        try:
            while not self.closed.is_set() and time.monotonic() < deadline:
                try:
                    item = q.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is None:
                    break
                line = json.dumps(item).encode() + b"\n"
                h.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError:
            pass  # the client went away
        finally:
            with self._lock:
                self._watchers.remove(q)

    @staticmethod
    def _send(h, code: int, body: bytes) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
