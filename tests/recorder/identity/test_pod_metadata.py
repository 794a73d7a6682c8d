"""Pod metadata from a real local HTTPS server that plays the API server or kubelet: names found by
pod UID and container id, refresh rate limits, and every failure survived with a clear log line."""

from __future__ import annotations

import json
import logging
import socket
import threading
from pathlib import Path

import pytest

from helpers.fake_pod_api import (
    CID_APP,
    CID_INIT,
    CID_NEW,
    CID_SIDECAR,
    CID_UI,
    CID_UI_OLD,
    POD_LIST,
    TOKEN,
    UID_A,
    UID_B,
    UID_NEW,
    PodApi,
    container_status,
    pod,
)
from recorder.config import ConfigError, RecorderConfig, load_config
from recorder.identity.containers import from_cgroup_path
from recorder.identity.pods import MAX_RESPONSE_BYTES, PodInfo, PodMetadataSource, pod_list_url
from testbed.pki import make_pki


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def api(pki):
    server = PodApi(pki)
    yield server
    server.close()


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")  # kubelet-written tokens may end with a newline
    return path


@pytest.fixture
def log_records(caplog):
    caplog.set_level(logging.DEBUG, logger="oisp.record")
    return caplog


def _source(api: PodApi, pki, token_file: Path, clock: Clock | None = None, **kw) -> PodMetadataSource:
    return PodMetadataSource(f"{api.url}/pods", mode="kubelet", token_file=token_file, ca_file=pki.ca_file,
                             clock=clock or Clock(), **kw)


def _config(tmp_path: Path, pki, token_file: Path, **kw) -> RecorderConfig:
    return RecorderConfig(segments_dir=tmp_path, node_name="node-a", kubernetes_token_file=token_file,
                          kubernetes_ca_file=pki.ca_file, **kw)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_apiserver_mode_names_pods_and_containers(api, pki, token_file, tmp_path):
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    source = PodMetadataSource.from_config(_config(tmp_path, pki, token_file), environ=env)
    assert source.mode == "apiserver"  # auto, inside a "cluster"

    # The identity a real cri-containerd/systemd cgroup path gives, as the recorder will call it.
    ident = from_cgroup_path(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
        f"{UID_A.replace('-', '_')}.slice/cri-containerd-{CID_APP}.scope"
    )
    assert source.lookup(ident.pod_uid, ident.container_id) == PodInfo(
        UID_A, "openai-client-7d9f8b6c5-x2k4p", "ml", "app", "node-a", "openai-client", "openai-client"
    )
    assert api.paths == ["/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a"]
    assert api.tokens == [f"Bearer {TOKEN}"]

    assert source.lookup(UID_A, CID_INIT).container_name == "fetch-model"
    assert source.lookup(UID_A, CID_SIDECAR).container_name == "envoy"
    ui = source.lookup(UID_B, CID_UI)
    assert (ui.pod_name, ui.namespace, ui.container_name, ui.app) == ("chat-ui-0", "web", "ui", "chat-ui")
    assert source.lookup(UID_B, CID_UI_OLD).container_name == "ui"  # the instance before the restart
    assert source.lookup(UID_B.upper(), None).pod_name == "chat-ui-0"
    assert source.lookup(None, CID_SIDECAR).pod_uid == UID_A  # container id alone is enough
    assert api.requests == 1  # every hit came from the cache


def test_unknown_uid_refreshes_once_then_is_rate_limited(api, pki, token_file):
    clock = Clock()
    source = _source(api, pki, token_file, clock, refresh_seconds=5.0)
    assert source.lookup(UID_A, CID_APP).container_name == "app"
    assert api.requests == 1

    clock.now += 10
    assert source.lookup(UID_NEW, CID_NEW) is None
    assert api.requests == 2  # a miss refetches
    for i in range(1000):  # a flood of unknown UIDs within the window
        clock.now += 0.004
        assert source.lookup(f"{i:08x}-0000-4000-8000-000000000000", None) is None
    assert api.requests == 2
    assert source.lookup(UID_A, CID_APP).pod_name == "openai-client-7d9f8b6c5-x2k4p"  # hits still answered

    # The pod starts; after the window, the next miss finds it.
    pods = json.loads(api.body)
    new = pod(UID_NEW, "batch-29182-abcde", "jobs", {}, {"containerStatuses": [container_status("worker", f"docker://{CID_NEW}")]})
    api.body = json.dumps({**pods, "items": pods["items"] + [new]}).encode()
    clock.now += 1.1
    assert source.lookup(UID_NEW, CID_NEW).container_name == "worker"
    assert api.requests == 3


def test_known_pod_with_unknown_container_refreshes_and_still_names_thepod(api, pki, token_file):
    clock = Clock()
    source = _source(api, pki, token_file, clock)
    found = source.lookup(UID_A, CID_NEW)  # e.g. the container started after the last list
    assert (found.pod_name, found.container_name) == ("openai-client-7d9f8b6c5-x2k4p", None)
    assert api.requests == 1
    assert source.lookup(UID_A, CID_NEW).container_name is None
    assert api.requests == 1  # rate-limited like any miss


def test_concurrent_misses_fetch_once(api, pki, token_file):
    source = _source(api, pki, token_file)
    barrier = threading.Barrier(16)
    results: list[PodInfo | None] = []

    def worker():
        barrier.wait()
        for _ in range(50):
            results.append(source.lookup(UID_B, CID_UI))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert api.requests == 1
    assert len(results) == 800 and all(r is not None and r.container_name == "ui" for r in results)


def _unused_port() -> socket.socket:
    """A bound socket that does not listen: connecting to its port is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.parametrize("failure, expected", [
    ("wrong token", "401 Unauthorized: the ServiceAccount token in"),
    ("403", "needs a ClusterRole with verb [get] on resource [nodes/proxy]"),
    ("500", "answered HTTP 500 (etcdserver: request timed out)"),
    ("garbage", "the response is not JSON"),
    ("not a list", "the response is not a pod list"),
    ("refused", "Connection refused"),
    ("untrusted", "certificate not trusted by"),
])
def test_failures_are_survived_logged_once_and_recovered_from(failure, expected, api, pki, token_file,
                                                              log_records, tmp_path):
    clock = Clock()
    url, ca_file = f"{api.url}/pods", pki.ca_file
    if failure == "wrong token":
        token_file.write_text("stale-token")
    elif failure in ("403", "500"):
        api.status = int(failure)
        api.body = b'{"kind":"Status","message":"etcdserver: request timed out"}'
    elif failure == "garbage":
        api.body = b"<html>502 Bad Gateway</html>"
    elif failure == "not a list":
        api.body = b'{"kind":"Pod","metadata":{"name":"x"}}'
    elif failure == "refused":
        closed = _unused_port()
        url = f"https://127.0.0.1:{closed.getsockname()[1]}/pods"
    elif failure == "untrusted":
        ca_file = make_pki(tmp_path / "other").ca_file
    source = PodMetadataSource(url, mode="kubelet", token_file=token_file, ca_file=ca_file, clock=clock,
                               timeout_seconds=2.0)

    assert source.lookup(UID_A, CID_APP) is None
    clock.now += 6
    assert source.lookup(UID_A, CID_APP) is None
    assert source.fetches == 2 and source.failures == 2
    warnings = _warnings(log_records)
    assert len(warnings) == 1, warnings  # the same error, logged once
    assert expected in warnings[0] and "recording continues without it" in warnings[0]

    # Fixed: the next refresh after the window succeeds.
    token_file.write_text(TOKEN)
    api.status, api.body = 200, json.dumps(POD_LIST).encode()
    source.url, source.ca_file = f"{api.url}/pods", pki.ca_file
    clock.now += 6
    assert source.lookup(UID_A, CID_APP).container_name == "app"
    assert "pods, 5 containers listed by" in log_records.records[-1].getMessage()
    if failure == "refused":
        closed.close()


def test_missing_token_is_survived(api, pki, tmp_path, log_records):
    source = PodMetadataSource(f"{api.url}/pods", token_file=tmp_path / "absent", ca_file=pki.ca_file)
    assert source.lookup(UID_A, None) is None
    assert api.requests == 0
    assert "cannot read the ServiceAccount token" in _warnings(log_records)[0]


def test_403_from_the_api_server_names_its_rbac(api, pki, token_file, log_records):
    api.status = 403
    source = PodMetadataSource(f"{api.url}/api/v1/pods", mode="apiserver", token_file=token_file,
                               ca_file=pki.ca_file)
    assert source.lookup(UID_A, None) is None
    assert "verbs [get, list] on resources [pods]" in _warnings(log_records)[0]


def test_size_cap(api, pki, token_file, log_records):
    # Declared over the default 64 MiB cap: refused from the header, without reading the body.
    api.content_length = str(MAX_RESPONSE_BYTES + 1)
    source = _source(api, pki, token_file)
    assert source.max_bytes == 64 * 1024 * 1024
    assert source.lookup(UID_A, CID_APP) is None
    assert f"response of {MAX_RESPONSE_BYTES + 1} bytes is over the" in _warnings(log_records)[0]

    # Undeclared (read to the end of the connection) and over a small cap: refused while reading.
    api.content_length = "omit"
    small = _source(api, pki, token_file, max_bytes=len(api.body) - 1)
    assert small.lookup(UID_A, CID_APP) is None
    assert "response is over the" in _warnings(log_records)[-1]
    exact = _source(api, pki, token_file, max_bytes=len(api.body))
    assert exact.lookup(UID_A, CID_APP).container_name == "app"


def test_off_mode_makes_no_request(api, pki, token_file, tmp_path):
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    source = PodMetadataSource.from_config(
        _config(tmp_path, pki, token_file, kubernetes_metadata="off", kubelet_url=api.url), environ=env
    )
    assert not source.enabled
    assert source.lookup(UID_A, CID_APP) is None
    assert not source.refresh()
    assert api.requests == 0


def test_kubelet_mode(api, pki, token_file, tmp_path):
    source = PodMetadataSource.from_config(
        _config(tmp_path, pki, token_file, kubernetes_metadata="kubelet", kubelet_url=api.url), environ={}
    )
    assert source.refresh()
    assert api.paths == ["/pods"]
    assert source.lookup(UID_B, CID_UI).container_name == "ui"


@pytest.mark.parametrize("mode, env, token, expected", [
    ("auto", {}, True, ("off", None)),
    ("auto", {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, False, ("off", None)),
    ("auto", {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "NODE_NAME": "w-1"},
     True, ("apiserver", "https://10.96.0.1:443/api/v1/pods?fieldSelector=spec.nodeName%3Dw-1")),
    ("apiserver", {"KUBERNETES_SERVICE_HOST": "fd00::1"}, True,
     ("apiserver", "https://[fd00::1]:443/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a")),
    ("apiserver", {}, True, ("off", None)),
    ("kubelet", {"NODE_IP": "192.168.1.20"}, True, ("kubelet", "https://192.168.1.20:10250/pods")),
    ("kubelet", {}, True, ("kubelet", "https://node-a:10250/pods")),
])
def test_mode_and_url_resolution(mode, env, token, expected, tmp_path):
    token_file = tmp_path / "token"
    if token:
        token_file.write_text(TOKEN)
    assert pod_list_url(mode, node_name="node-a", token_file=token_file, environ=env) == expected


def test_config_keys(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "recorder:\n  segments_dir: /tmp/s\n  kubernetes_metadata: kubelet\n"
        "  kubelet_url: https://10.0.0.5:10250\n  kubernetes_token_file: /t\n  kubernetes_ca_file: /c\n"
        "  kubernetes_refresh_seconds: 2\n"
    )
    cfg = load_config(path, {})
    assert (cfg.kubernetes_metadata, cfg.kubelet_url, cfg.kubernetes_token_file, cfg.kubernetes_ca_file,
            cfg.kubernetes_refresh_seconds) == ("kubelet", "https://10.0.0.5:10250", Path("/t"), Path("/c"),
                                                2.0)
    defaults = load_config(None, {"segments_dir": tmp_path})
    assert defaults.kubernetes_metadata == "auto" and defaults.kubelet_url is None
    assert defaults.kubernetes_token_file == Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert defaults.kubernetes_refresh_seconds == 5.0
    for line, message in [
        ("kubernetes_metadata: cluster", "must be one of off, kubelet, apiserver, auto"),
        ("kubelet_url: http://10.0.0.5:10255", "must be an https:// URL"),
        ("kubernetes_refresh_seconds: 0", "must be a positive number"),
        ("kubernetes_token_file: 3", "must be a path"),
        ("kubernetes_metdata: off", "unknown key 'recorder.kubernetes_metdata'"),
    ]:
        path.write_text(f"recorder:\n  segments_dir: /tmp/s\n  {line}\n")
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            load_config(path, {})
