"""Pod name, namespace and container name for a pod UID and container id, from this node's pod list.

The recorder stores these with what it captures so offline analysis never needs the cluster. The list
comes from the API server (pods whose spec.nodeName is this node) or from the kubelet's /pods, read
with the pod's ServiceAccount token. Metadata is best effort: a failure is logged once and recording
goes on without it; lookups never raise.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from recorder.config import KUBERNETES_METADATA_MODES, RecorderConfig

log = logging.getLogger("oisp.record")

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
KUBELET_PORT = 10250
_STATUS_LISTS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")
_MAX_LOGGED_ERRORS = 100  # distinct error keys remembered between two successes

_RBAC_HINT = {
    "apiserver": "a ClusterRole with verbs [get, list] on resources [pods] (apiGroup \"\")",
    "kubelet": "a ClusterRole with verb [get] on resource [nodes/proxy] (apiGroup \"\")",
}


@dataclass(frozen=True)
class PodInfo:
    pod_uid: str
    pod_name: str
    namespace: str
    container_name: str | None  # None when the container id is not (yet) in the pod's status
    node_name: str | None
    service_account: str | None = None
    app: str | None = None  # label app.kubernetes.io/name, else app


class PodListError(Exception):
    """The pod list could not be fetched or parsed. `key` groups repeats of one error for logging."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key or message


def _field(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _runtime_id(container_id: Any) -> str | None:
    """The bare id of `containerd://ID`, `cri-o://ID`, `docker://ID` (what cgroup paths show)."""
    if not isinstance(container_id, str) or "://" not in container_id:
        return None
    return container_id.split("://", 1)[1].lower() or None


def parse_pod_list(body: bytes) -> tuple[dict[str, PodInfo], dict[str, PodInfo]]:
    """Pods by UID (container_name None) and containers by runtime id, from a v1 PodList."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PodListError(f"the response is not JSON ({exc})", key="not JSON") from None
    items = _field(doc, "items")
    if not isinstance(items, list):
        raise PodListError("the response is not a pod list (no 'items' array)", key="not a pod list")
    pods: dict[str, PodInfo] = {}
    containers: dict[str, PodInfo] = {}
    for item in items:
        uid, name = _str(_field(item, "metadata", "uid")), _str(_field(item, "metadata", "name"))
        if uid is None or name is None:
            continue
        labels = _field(item, "metadata", "labels")
        labels = labels if isinstance(labels, dict) else {}
        pod = PodInfo(
            pod_uid=uid.lower(),
            pod_name=name,
            namespace=_str(_field(item, "metadata", "namespace")) or "default",
            container_name=None,
            node_name=_str(_field(item, "spec", "nodeName")),
            service_account=_str(_field(item, "spec", "serviceAccountName")),
            app=_str(labels.get("app.kubernetes.io/name")) or _str(labels.get("app")),
        )
        pods[pod.pod_uid] = pod
        for list_name in _STATUS_LISTS:
            statuses = _field(item, "status", list_name)
            for status in statuses if isinstance(statuses, list) else ():
                cname = _str(_field(status, "name"))
                if cname is None:
                    continue
                # The previous instance too: its processes may still be exiting after a restart.
                for raw in (_field(status, "containerID"), _field(status, "lastState", "terminated",
                                                                    "containerID")):
                    cid = _runtime_id(raw)
                    if cid:
                        containers[cid] = replace(pod, container_name=cname)
    return pods, containers


def _status_detail(body: bytes) -> str:
    """The `message` of a Kubernetes Status object, if the error body is one."""
    try:
        message = _field(json.loads(body), "message")
    except (ValueError, UnicodeDecodeError):
        return ""
    return f" ({message[:200]})" if isinstance(message, str) and message else ""


def pod_list_url(
    mode: str,
    *,
    node_name: str,
    token_file: Path,
    kubelet_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str | None]:
    """The effective mode and the URL of this node's pod list; ("off", None) when there is none.

    NODE_NAME (the downward API's spec.nodeName) beats `node_name`, whose default is the host name,
    which is not always the node's name."""
    env = os.environ if environ is None else environ
    if mode not in KUBERNETES_METADATA_MODES:
        raise ValueError(f"unknown pod metadata mode {mode!r}")
    if mode == "auto":
        in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST")) and Path(token_file).is_file()
        mode = "apiserver" if in_cluster else "off"
    node = env.get("NODE_NAME") or node_name
    if mode == "apiserver":
        host = env.get("KUBERNETES_SERVICE_HOST")
        if not host:
            log.warning("pod metadata: mode apiserver but KUBERNETES_SERVICE_HOST is not set; disabled")
            return "off", None
        host = f"[{host}]" if ":" in host else host
        port = env.get("KUBERNETES_SERVICE_PORT") or "443"
        return mode, f"https://{host}:{port}/api/v1/pods?fieldSelector=" + quote(f"spec.nodeName={node}")
    if mode == "kubelet":
        if kubelet_url is None:
            address = env.get("NODE_IP") or node
            address = f"[{address}]" if ":" in address else address
            kubelet_url = f"https://{address}:{KUBELET_PORT}"
        parts = urlsplit(kubelet_url)
        return mode, kubelet_url.rstrip("/") + "/pods" if parts.path in ("", "/") else kubelet_url
    return "off", None


class PodMetadataSource:
    """Answers lookups from a cached copy of the node's pod list, refetched when a lookup misses, at
    most once every `refresh_seconds` (so a flood of unknown UIDs cannot hammer the API server).

    Thread-safe: lookups read an immutable snapshot; one thread at a time fetches, and threads that
    missed meanwhile wait for its answer instead of fetching again."""

    def __init__(
        self,
        url: str | None,
        *,
        mode: str = "apiserver",
        token_file: Path = RecorderConfig.kubernetes_token_file,
        ca_file: Path = RecorderConfig.kubernetes_ca_file,
        refresh_seconds: float = 5.0,
        timeout_seconds: float = 5.0,
        max_bytes: int = MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        self.mode = mode if url else "off"
        self.token_file = Path(token_file)
        self.ca_file = Path(ca_file)
        self.refresh_seconds = refresh_seconds
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes
        self._clock = clock
        self._snapshot: tuple[dict[str, PodInfo], dict[str, PodInfo]] = ({}, {})
        self._refresh_lock = threading.Lock()
        self._last_attempt: float | None = None
        self._healthy = False
        self._logged: set[str] = set()
        self.fetches = 0  # attempts, for the recorder's stats
        self.failures = 0

    @classmethod
    def from_config(cls, cfg: RecorderConfig, environ: Mapping[str, str] | None = None) -> PodMetadataSource:
        mode, url = pod_list_url(
            cfg.kubernetes_metadata,
            node_name=cfg.node_name,
            token_file=cfg.kubernetes_token_file,
            kubelet_url=cfg.kubelet_url,
            environ=environ,
        )
        if url is None:
            log.info("pod metadata: off (kubernetes_metadata: %s)", cfg.kubernetes_metadata)
        else:
            log.info("pod metadata: from the %s, %s", mode, url)
        return cls(
            url,
            mode=mode,
            token_file=cfg.kubernetes_token_file,
            ca_file=cfg.kubernetes_ca_file,
            refresh_seconds=cfg.kubernetes_refresh_seconds,
        )

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def lookup(self, pod_uid: str | None, container_id: str | None = None) -> PodInfo | None:
        """The pod (and container, when its id is known) of a process; None when unknown or disabled.
        Never raises: the recorder records without metadata rather than not at all."""
        if self.url is None or not (pod_uid or container_id):
            return None
        uid, cid = (pod_uid or "").lower(), (container_id or "").lower()
        try:
            found = self._find(uid, cid)
            if found is not None and (not cid or found.container_name is not None):
                return found
            self._refresh_if_due()
            return self._find(uid, cid)
        except Exception as exc:  # a bug here must not stop the recording
            self._log_once("lookup", f"pod metadata: lookup failed: {exc!r}")
            return None

    def refresh(self) -> bool:
        """Fetch the pod list now (e.g. at start-up); False, logged, on failure or when disabled."""
        if self.url is None:
            return False
        with self._refresh_lock:
            self._last_attempt = self._clock()
            return self._refresh_locked()

    def _find(self, uid: str, cid: str) -> PodInfo | None:
        pods, containers = self._snapshot
        if cid:
            found = containers.get(cid)
            if found is not None and (not uid or found.pod_uid == uid):
                return found
        return pods.get(uid) if uid else None

    def _refresh_if_due(self) -> None:
        with self._refresh_lock:
            now = self._clock()
            if self._last_attempt is not None and now - self._last_attempt < self.refresh_seconds:
                return
            self._last_attempt = now
            self._refresh_locked()

    def _refresh_locked(self) -> bool:
        self.fetches += 1
        try:
            pods, containers = parse_pod_list(self._fetch())
        except PodListError as exc:
            self.failures += 1
            self._healthy = False
            self._log_once(exc.key, f"pod metadata: {exc}; recording continues without it")
            return False
        self._snapshot = (pods, containers)
        if not self._healthy:
            log.info("pod metadata: %d pods, %d containers listed by %s", len(pods), len(containers),
                     self.url)
            if not pods:
                log.warning("pod metadata: no pods listed for this node; if the node's name is not the "
                            "host name, set NODE_NAME (downward API spec.nodeName) or recorder.node_name")
        self._healthy = True
        self._logged.clear()  # a later outage is news again
        return True

    def _log_once(self, key: str, message: str) -> None:
        if key in self._logged:
            log.debug("%s", message)
            return
        if len(self._logged) < _MAX_LOGGED_ERRORS:
            self._logged.add(key)
        log.warning("%s", message)

    def _fetch(self) -> bytes:
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            message = f"cannot read the ServiceAccount token {self.token_file}: {exc.strerror}"
            raise PodListError(message) from None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise PodListError(f"cannot load the CA file {self.ca_file}: {exc}") from None
        parts = urlsplit(self.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port or 443, context=context, timeout=self.timeout_seconds
        )
        try:
            conn.request("GET", target, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": "oisp-record",
            })
            response = conn.getresponse()
            if response.status != 200:
                message = self._status_message(response.status) + _status_detail(response.read(4096))
                raise PodListError(message, key=f"HTTP {response.status}")
            return self._read_bounded(response)
        except ssl.SSLCertVerificationError as exc:
            hint = (" (kubelet serving certificates are often self-signed: enable serverTLSBootstrap or set "
                    "recorder.kubernetes_ca_file to the kubelet's CA)") if self.mode == "kubelet" else ""
            raise PodListError(
                f"{self.url}: certificate not trusted by {self.ca_file}: {exc.verify_message}{hint}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise PodListError(f"cannot get {self.url}: {exc or type(exc).__name__}") from None
        finally:
            conn.close()

    def _status_message(self, status: int) -> str:
        if status == 401:
            return (f"{self.url} answered 401 Unauthorized: the ServiceAccount token in {self.token_file} "
                    "was rejected (expired, or not from this cluster)")
        if status == 403:
            return (f"{self.url} answered 403 Forbidden: the recorder's ServiceAccount needs "
                    f"{_RBAC_HINT[self.mode]}, bound to it by a ClusterRoleBinding")
        return f"{self.url} answered HTTP {status}"

    def _read_bounded(self, response: http.client.HTTPResponse) -> bytes:
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise PodListError(f"{self.url}: response of {declared} bytes is over the {self.max_bytes} byte "
                               "limit, not read", key="too large")
        # The socket timeout bounds each read; this bounds a server that trickles bytes.
        deadline = time.monotonic() + 4 * self.timeout_seconds
        chunks, total = [], 0
        while chunk := response.read(65536):
            total += len(chunk)
            if total > self.max_bytes:
                raise PodListError(f"{self.url}: response is over the {self.max_bytes} byte limit, refused",
                                   key="too large")
            if time.monotonic() > deadline:
                raise PodListError(f"{self.url}: response took over {4 * self.timeout_seconds:g} s",
                                   key="too slow")
            chunks.append(chunk)
        return b"".join(chunks)
