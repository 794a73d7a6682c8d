"""Pod metadata from a watch on the node's pods (recorder/identity/pods.py), through lightkube, against a
fake API server serving real Kubernetes JSON over real HTTPS (testbed/fake_kube_api.py): names,
containers and images, service accounts, selected labels, the owning workload through ReplicaSets and
Jobs, a pod that lived for a second, a watch that ends or expires, RBAC failures, and exactly the
verbs the ClusterRole grants."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
import yaml

from recorder.config import ConfigError, RecorderConfig, load_config
from recorder.identity.pods import PodMetadataSource, api_server_url
from testbed.fake_kube_api import FakeKubeApi, pod
from testbed.pki import make_pki

TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-token"
NODE = "node-a"
UID_WEB = "8d2f6c1e-4b3a-4f5e-9d8c-7b6a5f4e3d2c"
UID_JOB = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
UID_DB = "2b3c4d5e-6f70-4a7b-8c9d-0e1f2a3b4c5e"
UID_BARE = "3c4d5e6f-7081-4a7b-8c9d-0e1f2a3b4c5f"
UID_BLINK = "99999999-aaaa-4bbb-8ccc-dddddddddddd"
CID = {name: f"{i:02x}" * 32 for i, name in enumerate(("web", "sidecar", "job", "db", "bare", "blink"), 1)}
MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("kube-pki"))


@pytest.fixture
def api(pki):
    server = FakeKubeApi(pki, TOKEN, NODE)
    # a Deployment's pod (through its ReplicaSet), a CronJob's (through its Job), a StatefulSet's, a bare pod
    server.add_controller("ReplicaSet", "chat-api-7d9f8b6c5", "ml", ("Deployment", "chat-api"))
    server.add_controller("Job", "nightly-29104560", "batch", ("CronJob", "nightly"))
    server.event("ADDED", pod(UID_WEB, "chat-api-7d9f8b6c5-x2k4p", "ml", NODE,
                              containers={"app": f"containerd://{CID['web']}",
                                          "envoy": f"containerd://{CID['sidecar']}"},
                              images={"app": "registry.local/chat-api:2.4.1"},
                              labels={"app.kubernetes.io/name": "chat-api", "team": "ml",
                                      "pod-template-hash": "7d9f8b6c5"},
                              service_account="chat-api", owner=("ReplicaSet", "chat-api-7d9f8b6c5")))
    server.event("ADDED", pod(UID_JOB, "nightly-29104560-q8z2x", "batch", NODE,
                              containers={"run": f"cri-o://{CID['job']}"}, service_account="nightly",
                              owner=("Job", "nightly-29104560")))
    server.event("ADDED", pod(UID_DB, "vector-db-0", "data", NODE, containers={"db": f"containerd://{CID['db']}"},
                              owner=("StatefulSet", "vector-db")))
    server.event("ADDED", pod(UID_BARE, "debug", "default", NODE, containers={"sh": f"containerd://{CID['bare']}"}))
    yield server
    server.close()


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def _config(api, pki, token_file, **kw) -> RecorderConfig:
    return RecorderConfig(**{"kubernetes_metadata": "apiserver", "kubernetes_api_url": api.url,
                             "node_name": NODE, "kubernetes_token_file": token_file,
                             "kubernetes_ca_file": pki.ca_file, **kw})


@pytest.fixture
def watching(api, pki, token_file):
    """A source watching the fake API server, and the stop flag of its thread."""
    cfg = _config(api, pki, token_file, kubernetes_labels=["app.kubernetes.io/name", "team"])
    source = PodMetadataSource.from_config(cfg, environ={})
    source.miss_wait_seconds = 10  # a lookup waits for the watch to deliver its pod: no race with it
    stop = threading.Event()
    thread = source.start(stop)
    assert source.synced.wait(10), "the watch never answered"
    yield source
    source.close(stop)
    api.end_watches()  # a read in progress is not interrupted by closing the client: the stream ends
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_pods_are_named_with_their_workload_service_account_image_and_labels(watching, api):
    web = watching.lookup(UID_WEB, CID["web"])
    assert (web.pod_name, web.namespace, web.container_name) == ("chat-api-7d9f8b6c5-x2k4p", "ml", "app")
    assert (web.workload_kind, web.workload_name) == ("Deployment", "chat-api")  # through the ReplicaSet
    assert web.service_account == "chat-api" and web.container_image == "registry.local/chat-api:2.4.1"
    assert json.loads(web.labels) == {"app.kubernetes.io/name": "chat-api", "team": "ml"}  # those selected
    sidecar = watching.lookup(UID_WEB, CID["sidecar"])
    assert sidecar.container_name == "envoy" and sidecar.container_image == "registry.local/envoy:1"
    job = watching.lookup(UID_JOB, CID["job"])
    assert (job.workload_kind, job.workload_name, job.service_account) == ("CronJob", "nightly", "nightly")
    db = watching.lookup(UID_DB, CID["db"])
    assert (db.workload_kind, db.workload_name, db.labels) == ("StatefulSet", "vector-db", None)
    bare = watching.lookup(UID_BARE, CID["bare"])
    assert (bare.workload_kind, bare.workload_name) == ("Pod", "debug")
    assert watching.lookup(UID_WEB).container_name is None  # the pod, without a container id
    # exactly the verbs manifests/base/rbac.yaml grants, and nothing else
    assert set(api.requests) == {("watch", "pods"), ("get", "replicasets"), ("get", "jobs")}


def test_a_pod_that_lived_for_a_second_is_still_named(watching, api):
    blink = pod(UID_BLINK, "migrate-abc12", "ml", NODE, containers={"migrate": None})
    api.event("ADDED", blink)  # scheduled, no container yet
    api.event("MODIFIED", pod(UID_BLINK, "migrate-abc12", "ml", NODE,
                              containers={"migrate": f"containerd://{CID['blink']}"}))
    api.event("DELETED", pod(UID_BLINK, "migrate-abc12", "ml", NODE,
                             containers={"migrate": f"containerd://{CID['blink']}"}))
    found = watching.lookup(UID_BLINK, CID["blink"])  # waits (once, briefly) for the watch to deliver it
    assert found is not None and (found.pod_name, found.container_name) == ("migrate-abc12", "migrate")


def test_pods_added_later_and_watches_that_end_or_expire(watching, api):
    api.end_watches()  # the API server's timeout: the watch is made again from where it was
    api.event("ADDED", pod("44444444-4444-4444-8444-444444444444", "late-1", "ml", NODE,
                           containers={"c": "containerd://" + "44" * 32}))
    assert watching.lookup("44444444-4444-4444-8444-444444444444", "44" * 32).pod_name == "late-1"
    api.expire_next_watch = True  # the next resume is refused (410): it starts again from the current state
    api.end_watches()
    api.event("ADDED", pod("55555555-5555-4555-8555-555555555555", "late-2", "ml", NODE,
                           containers={"c": "containerd://" + "55" * 32}))
    assert watching.lookup("55555555-5555-4555-8555-555555555555", "55" * 32).pod_name == "late-2"
    assert watching.lookup(UID_WEB, CID["web"]).workload_name == "chat-api"


def test_an_unknown_pod_is_waited_for_once(watching):
    uid = "66666666-6666-4666-8666-666666666666"
    watching.miss_wait_seconds = 0.2
    assert watching.lookup(uid, "66" * 32) is None
    assert uid in watching._missed  # the next lookup of it does not wait


def test_owners_it_may_not_read_name_the_direct_owner_and_are_logged_once(api, pki, token_file, caplog):
    api.forbidden.add("replicasets")
    source = PodMetadataSource.from_config(_config(api, pki, token_file), environ={})
    stop = threading.Event()
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        thread = source.start(stop)
        assert source.synced.wait(10)
        web = source.lookup(UID_WEB, CID["web"])
        source.close(stop)
        api.end_watches()
        thread.join(timeout=10)
    assert (web.workload_kind, web.workload_name) == ("ReplicaSet", "chat-api-7d9f8b6c5")
    warnings = [r.getMessage() for r in caplog.records if "replicasets" in r.getMessage()]
    assert len(warnings) == 1 and "HTTP 403" in warnings[0] and "[get] on replicasets" in warnings[0]


def test_a_watch_it_may_not_make_is_survived_and_retried(api, pki, token_file, caplog):
    api.forbidden.add("pods")
    source = PodMetadataSource.from_config(_config(api, pki, token_file), environ={})
    source.miss_wait_seconds = 0.1
    stop = threading.Event()
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        thread = source.start(stop)
        assert source.lookup(UID_WEB, CID["web"]) is None  # nothing known, nothing raised
        api.forbidden.clear()  # the ClusterRole is fixed: the retried watch succeeds
        assert source.synced.wait(15)
        assert source.lookup(UID_WEB, CID["web"]) is not None or source.lookup(UID_DB, CID["db"]) is not None
        source.close(stop)
        api.end_watches()
        thread.join(timeout=10)
    assert any("HTTP 403" in r.getMessage() and "[watch] on pods" in r.getMessage() for r in caplog.records)


def test_a_wrong_token_is_survived(api, pki, tmp_path):
    bad = tmp_path / "token"
    bad.write_text("not-the-token")
    source = PodMetadataSource.from_config(_config(api, pki, bad), environ={})
    source.miss_wait_seconds = 0.1
    stop = threading.Event()
    source.start(stop)
    try:
        assert source.lookup(UID_WEB, CID["web"]) is None
    finally:
        source.close(stop)
    assert ("watch", "pods") in api.requests


def test_off_mode_makes_no_request(api, pki, token_file):
    cfg = _config(api, pki, token_file, kubernetes_metadata="off")
    source = PodMetadataSource.from_config(cfg, environ={})
    assert not source.enabled and source.start(threading.Event()) is None
    assert source.lookup(UID_WEB, CID["web"]) is None
    assert api.requests == []


@pytest.mark.parametrize("mode, env, token, explicit, expected", [
    ("auto", {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, True, None,
     "https://10.96.0.1:443"),
    ("auto", {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, True, None,
     "https://[fd00::1]:6443"),
    ("auto", {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, False, None, None),  # no token: not in a cluster
    ("auto", {}, True, None, None),
    ("apiserver", {}, True, None, None),
    ("apiserver", {}, False, "https://api.example:6443/", "https://api.example:6443"),
    ("off", {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, True, None, None),
])
def test_api_server_url(mode, env, token, explicit, expected, tmp_path):
    token_file = tmp_path / "token"
    if token:
        token_file.write_text("t")
    assert api_server_url(mode, explicit, token_file, env) == expected


def test_config_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"recorder": {"kubernetes_labels": ["team"], "segments_dir": str(tmp_path),
                                                 "kubernetes_api_url": "https://api.example:6443"}}))
    cfg = load_config(path, {})
    assert cfg.kubernetes_labels == ["team"] and cfg.kubernetes_api_url == "https://api.example:6443"
    for bad, message in [({"kubernetes_metadata": "kubelet"}, "kubelet mode was removed"),
                         ({"kubelet_url": "https://10.0.0.1:10250"}, "was removed"),
                         ({"kubernetes_refresh_seconds": 5}, "was removed"),
                         ({"kubernetes_labels": "team"}, "must be a list of str"),
                         ({"kubernetes_api_url": "http://api:80"}, "https://")]:
        path.write_text(yaml.safe_dump({"recorder": {"segments_dir": str(tmp_path), **bad}}))
        with pytest.raises(ConfigError, match=message):
            load_config(path, {})


def test_the_cluster_role_grants_exactly_these_verbs():
    docs = list(yaml.safe_load_all((MANIFESTS / "base" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d and d.get("kind") == "ClusterRole")
    rules = {(g, r): sorted(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}
    assert rules == {("", "pods"): ["watch"], ("apps", "replicasets"): ["get"], ("batch", "jobs"): ["get"]}
