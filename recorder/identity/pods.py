"""Who a pod is, for a pod UID and container id: from a watch on this node's pods through the API server.

The recorder stores what it learns here with what it captures, so offline analysis never needs the
cluster: the pod's name and namespace, the container's name and image, the service account, the pod
labels the config selects, and the workload that owns the pod, following the controllers'
ownerReferences through a ReplicaSet to its Deployment and through a Job to its CronJob.

A watch (lightkube, a maintained client: no hand-written HTTP) delivers every pod of the node as it is
created, changed and deleted, so a pod that lived for a second is named as well as one that runs for
days; deleted pods are remembered for `RETAIN_DELETED_SECONDS`, while their processes' last records are
still being written. The API verbs used: watch on pods, get on replicasets (apps) and jobs (batch):
manifests/base/rbac.yaml grants exactly those. Metadata is best effort: a failure is logged
once, the watch is retried with backoff, and recording goes on without it; lookups never raise.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from recorder.config import KUBERNETES_METADATA_MODES, RecorderConfig

log = logging.getLogger("oisp.record")

_STATUS_LISTS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")
_SPEC_LISTS = ("initContainers", "containers", "ephemeralContainers")
RETAIN_DELETED_SECONDS = 600.0  # a deleted pod's processes may still have records on their way
MAX_PODS = 20_000  # pods remembered (a node runs at most a few hundred at once): the least recent go
MAX_OWNERS = 4096  # ReplicaSets and Jobs whose owner is remembered
OWNER_RETRY_SECONDS = 60.0  # an owner that could not be read is asked again after this
MISS_WAIT_SECONDS = 1.0  # a lookup of an unknown pod waits this long for the watch to deliver it
WATCH_TIMEOUT_SECONDS = 300  # the API server ends each watch request after this; it is made again
# after the n-th failure in a row; the first is retried at once (a keep-alive connection the server or a
# load balancer closed is the usual one)
BACKOFF_SECONDS = (0, 1, 2, 5, 10, 30)
_MAX_LOGGED_ERRORS = 100

RBAC_HINT = ("a ClusterRole with verbs [watch] on pods (apiGroup \"\") and [get] on replicasets "
             "(apiGroup apps) and jobs (apiGroup batch)")


@dataclass(frozen=True)
class PodInfo:
    pod_uid: str
    pod_name: str
    namespace: str
    container_name: str | None  # None when the container id is not (yet) in the pod's status
    node_name: str | None
    service_account: str | None = None
    workload_kind: str | None = None
    workload_name: str | None = None
    container_image: str | None = None
    labels: str | None = None  # the selected labels, a JSON object with sorted keys

    def identity_fields(self) -> dict[str, str | None]:
        """The ProcessIdentity fields this names (contract/identity.py)."""
        return {"pod_name": self.pod_name, "pod_namespace": self.namespace,
                "container_name": self.container_name, "service_account": self.service_account,
                "workload_kind": self.workload_kind, "workload_name": self.workload_name,
                "container_image": self.container_image, "pod_labels": self.labels}


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


def controller_of(obj: dict) -> tuple[str, str] | None:
    """(kind, name) of the object's controller (the ownerReference with controller: true, else the
    first), None when nothing owns it."""
    refs = [r for r in _field(obj, "metadata", "ownerReferences") or () if isinstance(r, dict)
            and _str(r.get("kind")) and _str(r.get("name"))]
    if not refs:
        return None
    ref = next((r for r in refs if r.get("controller") is True), refs[0])
    return ref["kind"], ref["name"]


def selected_labels(obj: dict, keys: tuple[str, ...]) -> str | None:
    labels = _field(obj, "metadata", "labels")
    if not isinstance(labels, dict):
        return None
    chosen = {k: labels[k] for k in keys if isinstance(labels.get(k), str)}
    return json.dumps(chosen, sort_keys=True, separators=(",", ":")) if chosen else None


def parse_pod(obj: dict, workload: tuple[str, str] | None, label_keys: tuple[str, ...] = ()) \
        -> tuple[PodInfo, dict[str, PodInfo]] | None:
    """The pod (container_name None) and its containers by runtime id, from a v1 Pod as JSON;
    `workload`: its top owner (None: the pod stands alone). None for an object that is not a pod."""
    uid, name = _str(_field(obj, "metadata", "uid")), _str(_field(obj, "metadata", "name"))
    if uid is None or name is None:
        return None
    kind, wname = workload or ("Pod", name)
    pod = PodInfo(pod_uid=uid.lower(), pod_name=name, namespace=_str(_field(obj, "metadata", "namespace"))
                  or "default", container_name=None, node_name=_str(_field(obj, "spec", "nodeName")),
                  service_account=_str(_field(obj, "spec", "serviceAccountName")), workload_kind=kind,
                  workload_name=wname, labels=selected_labels(obj, label_keys))
    images = {}
    for list_name in _SPEC_LISTS:
        for c in _field(obj, "spec", list_name) or ():
            if _str(_field(c, "name")) and _str(_field(c, "image")):
                images[c["name"]] = c["image"]
    containers: dict[str, PodInfo] = {}
    for list_name in _STATUS_LISTS:
        statuses = _field(obj, "status", list_name)
        for status in statuses if isinstance(statuses, list) else ():
            cname = _str(_field(status, "name"))
            if cname is None:
                continue
            image = images.get(cname) or _str(_field(status, "image"))
            # The previous instance too: its processes may still be exiting after a restart.
            for raw in (_field(status, "containerID"),
                        _field(status, "lastState", "terminated", "containerID")):
                cid = _runtime_id(raw)
                if cid:
                    containers[cid] = replace(pod, container_name=cname, container_image=image)
    return pod, containers


def api_server_url(mode: str, explicit: str | None = None, token_file: Path | None = None,
                   environ: Mapping[str, str] | None = None) -> str | None:
    """The API server to watch, or None when pod metadata is off. `auto` is on inside a cluster (the
    KUBERNETES_SERVICE_HOST variable and a ServiceAccount token)."""
    env = os.environ if environ is None else environ
    if mode not in KUBERNETES_METADATA_MODES:
        raise ValueError(f"unknown pod metadata mode {mode!r}")
    if mode == "off":
        return None
    if explicit:
        return explicit.rstrip("/")
    host = env.get("KUBERNETES_SERVICE_HOST")
    if not host or mode == "auto" and not (token_file and Path(token_file).is_file()):
        if mode == "apiserver":
            log.warning("pod metadata: mode apiserver but KUBERNETES_SERVICE_HOST is not set; disabled")
        return None
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{env.get('KUBERNETES_SERVICE_PORT') or '443'}"


def lightkube_client(url: str, token_file: Path, ca_file: Path, timeout: float):
    """A lightkube client of the API server at `url`, authenticated by the ServiceAccount token file
    (reread as the kubelet renews it) and trusting `ca_file`."""
    import httpx2
    from lightkube import Client, KubeConfig
    from lightkube.config.models import Cluster, User

    config = KubeConfig.from_one(cluster=Cluster(server=url, certificate_auth=str(ca_file)),
                                 user=User(token_file=str(token_file)))
    return Client(config, timeout=httpx2.Timeout(timeout, read=WATCH_TIMEOUT_SECONDS + 30), trust_env=False)


class PodMetadataSource:
    """The node's pods as the watch last described them; lookups read them under a lock.

    `client_factory` makes a lightkube Client (tests point it at a fake API server); None: disabled."""

    def __init__(self, client_factory: Callable[[], Any] | None, node_name: str, *,
                 label_keys: tuple[str, ...] = (), url: str | None = None,
                 clock: Callable[[], float] = time.monotonic, miss_wait_seconds: float = MISS_WAIT_SECONDS):
        self.client_factory = client_factory
        self.node_name = node_name
        self.label_keys = tuple(label_keys)
        self.url = url
        self._clock = clock
        self.miss_wait_seconds = miss_wait_seconds
        self._cond = threading.Condition()
        self._pods: OrderedDict[str, PodInfo] = OrderedDict()  # uid -> pod, least recently changed first
        self._containers: dict[str, dict[str, PodInfo]] = {}  # uid -> runtime id -> container
        self._deleted: dict[str, float] = {}  # uid -> when the watch said it was deleted
        self._owners: OrderedDict[tuple[str, str, str], tuple[tuple[str, str] | None, float | None]] = \
            OrderedDict()  # (kind, namespace, name) -> (its controller, retry time when unread)
        self._missed: set[str] = set()  # uids a lookup waited for in vain (it waits once per uid)
        self._logged: set[str] = set()
        self._client = None
        self.events = 0  # watch events applied, for the recorder's stats
        self.failures = 0  # watch requests that failed
        self.synced = threading.Event()  # the first watch request answered

    @classmethod
    def from_config(cls, cfg: RecorderConfig, environ: Mapping[str, str] | None = None) -> PodMetadataSource:
        env = os.environ if environ is None else environ
        url = api_server_url(cfg.kubernetes_metadata, cfg.kubernetes_api_url, cfg.kubernetes_token_file, env)
        node = env.get("NODE_NAME") or cfg.node_name
        if url is None:
            log.info("pod metadata: off (kubernetes_metadata: %s)", cfg.kubernetes_metadata)
            return cls(None, node)
        log.info("pod metadata: watching the pods of node %s at %s", node, url)

        def factory():
            return lightkube_client(url, cfg.kubernetes_token_file, cfg.kubernetes_ca_file, 10.0)
        return cls(factory, node, label_keys=tuple(cfg.kubernetes_labels), url=url)

    @property
    def enabled(self) -> bool:
        return self.client_factory is not None

    # ---- the watch ----------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> threading.Thread | None:
        if not self.enabled:
            return None
        thread = threading.Thread(target=self.run, args=(stop,), name="pod-watch", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set: each request resumes where the last one ended; a failure is logged
        once and retried with backoff; an expired resource version starts again from the current state."""
        from lightkube.resources.core_v1 import Pod

        failures = 0
        while not stop.is_set():
            try:
                self._client = self._client or self.client_factory()
                for event_type, pod in self._client.watch(
                        Pod, namespace="*", fields={"spec.nodeName": self.node_name},
                        server_timeout=WATCH_TIMEOUT_SECONDS, on_error=self._on_error):
                    self.synced.set()
                    failures = 0
                    self.apply(event_type, pod.to_dict())
                    if stop.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - the watch is retried, whatever went wrong
                if stop.is_set():
                    return  # close() ended the request
                self.failures += 1
                self._log_once(type(exc).__name__, f"pod metadata: the watch failed: {_describe(exc)}; "
                               "recording continues, the watch is retried")
            stop.wait(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)])
            failures += 1

    def close(self, stop: threading.Event) -> None:
        """Stop the watch: `stop` set and the client closed, so the thread ends when the request it
        waits in does (a daemon thread: the recorder does not wait for it)."""
        stop.set()
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _on_error(self, exc: Exception, count: int):
        from lightkube.types import OnErrorAction, OnErrorResult

        if self._client is None:  # closed
            return OnErrorResult(OnErrorAction.STOP)
        self.failures += 1
        status = _code(exc)
        if status == 410:  # the resource version expired: lightkube starts again from the current state
            return OnErrorResult(OnErrorAction.RETRY)
        self._log_once(f"watch {status}", f"pod metadata: the watch failed: {_describe(exc)}"
                       + (f"; the recorder's ServiceAccount needs {RBAC_HINT}" if status == 403 else ""))
        return OnErrorResult(OnErrorAction.RETRY, sleep=BACKOFF_SECONDS[min(count, len(BACKOFF_SECONDS) - 1)])

    def apply(self, event_type: str, obj: dict) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) of a pod, as JSON."""
        parsed = parse_pod(obj, self._workload(obj), self.label_keys)
        if parsed is None:
            return
        pod, containers = parsed
        now = self._clock()
        with self._cond:
            self.events += 1
            self._pods[pod.pod_uid] = pod
            self._pods.move_to_end(pod.pod_uid)
            # ids only added: a container that restarted keeps naming its old instance's processes
            self._containers.setdefault(pod.pod_uid, {}).update(containers)
            if event_type == "DELETED":
                self._deleted[pod.pod_uid] = now
            for uid in [u for u, t in self._deleted.items() if now - t > RETAIN_DELETED_SECONDS]:
                self._forget(uid)
            while len(self._pods) > MAX_PODS:
                self._forget(next(iter(self._pods)))
            self._cond.notify_all()

    def _forget(self, uid: str) -> None:
        self._pods.pop(uid, None)
        self._containers.pop(uid, None)
        self._deleted.pop(uid, None)

    # ---- owners -------------------------------------------------------------------------------
    def _workload(self, obj: dict) -> tuple[str, str] | None:
        """The pod's top owner: a ReplicaSet's Deployment, a Job's CronJob, else its controller."""
        owner = controller_of(obj)
        namespace = _str(_field(obj, "metadata", "namespace")) or "default"
        if owner is not None and owner[0] in ("ReplicaSet", "Job"):
            return self._owner_of(owner[0], namespace, owner[1]) or owner
        return owner

    def _owner_of(self, kind: str, namespace: str, name: str) -> tuple[str, str] | None:
        key = (kind, namespace, name)
        cached = self._owners.get(key)
        if cached is not None and (cached[1] is None or self._clock() < cached[1]):
            return cached[0]
        try:
            found, retry = self._read_owner(kind, namespace, name), None
        except Exception as exc:  # noqa: BLE001 - the pod is then named by its direct owner
            found, retry = None, self._clock() + OWNER_RETRY_SECONDS
            status = _code(exc)
            self._log_once(f"owner {kind} {status}", f"pod metadata: cannot read {kind} {namespace}/{name}: "
                           f"{_describe(exc)}" + (f"; the recorder's ServiceAccount needs {RBAC_HINT}"
                                                  if status == 403 else ""))
        self._owners[key] = (found, retry)
        self._owners.move_to_end(key)
        while len(self._owners) > MAX_OWNERS:
            self._owners.popitem(last=False)
        return found

    def _read_owner(self, kind: str, namespace: str, name: str) -> tuple[str, str] | None:
        from lightkube.resources.apps_v1 import ReplicaSet
        from lightkube.resources.batch_v1 import Job

        self._client = self._client or self.client_factory()
        res = ReplicaSet if kind == "ReplicaSet" else Job
        return controller_of(self._client.get(res, name, namespace=namespace).to_dict())

    # ---- lookups ------------------------------------------------------------------------------
    def lookup(self, pod_uid: str | None, container_id: str | None = None) -> PodInfo | None:
        """The pod (and container, when its id is known) of a process; None when unknown or disabled.
        An unknown pod is waited for once, briefly: the watch may not have delivered it yet. Never
        raises: the recorder records without metadata rather than not at all."""
        if not self.enabled or not (pod_uid or container_id):
            return None
        uid, cid = (pod_uid or "").lower(), (container_id or "").lower()
        try:
            with self._cond:
                found = self._find(uid, cid)
                if (found is None or cid and found.container_name is None) and uid not in self._missed:
                    self._cond.wait_for(lambda: self._complete(self._find(uid, cid), cid),
                                        timeout=self.miss_wait_seconds)
                    found = self._find(uid, cid)
                    if not self._complete(found, cid):
                        self._missed.add(uid)
                        if len(self._missed) > MAX_PODS:
                            self._missed.clear()
                return found
        except Exception as exc:  # noqa: BLE001 - a bug here must not stop the recording
            self._log_once("lookup", f"pod metadata: lookup failed: {exc!r}")
            return None

    @staticmethod
    def _complete(found: PodInfo | None, cid: str) -> bool:
        return found is not None and (not cid or found.container_name is not None)

    def _find(self, uid: str, cid: str) -> PodInfo | None:
        if cid:
            for containers in ([self._containers.get(uid, {})] if uid else self._containers.values()):
                found = containers.get(cid)
                if found is not None:
                    return found
        return self._pods.get(uid) if uid else None

    def _log_once(self, key: str, message: str) -> None:
        if key in self._logged:
            log.debug("%s", message)
            return
        if len(self._logged) < _MAX_LOGGED_ERRORS:
            self._logged.add(key)
        log.warning("%s", message)


def _code(exc: Exception) -> int | None:
    """The HTTP status of a failed request: lightkube's ApiError (a Status object) or an HTTP error."""
    code = getattr(getattr(exc, "status", None), "code", None)
    return code or getattr(getattr(exc, "response", None), "status_code", None)


def _describe(exc: Exception) -> str:
    code = _code(exc)
    if code:
        message = getattr(getattr(exc, "status", None), "message", None)
        return f"HTTP {code}" + (f" ({str(message)[:200]})" if message else "")
    return " ".join(str(exc).split()) or type(exc).__name__
