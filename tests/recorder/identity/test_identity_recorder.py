"""The recorder's identity pieces without eBPF: sni and socket records decoded into their columns,
process rows from a /proc-shaped tree, cgroup ids resolved to paths, ELF export lookups."""

from __future__ import annotations

import os
import shutil
import struct

import numpy as np
import pyarrow as pa

from contract import segment_format as sf
from recorder.capture.libraries import LibraryFinder, exported_symbols, exports_ssl
from recorder.capture.records import (
    HEADER_DTYPE,
    K_DATA,
    K_SNI,
    K_SOCKET,
    SOCKET_INFO,
    RecordDecoder,
    parse_socket_info,
)
from recorder.identity.processes import CgroupPaths, ProcessRegistry, process_rows
from recorder.identity.sockets import parse_proc_address


def record(kind: int, payload: bytes, **fields) -> bytes:
    h = np.zeros(1, dtype=HEADER_DTYPE)
    h["kind"], h["len"], h["pid"], h["ssl"], h["conn_gen"] = kind, len(payload), 42, 0x1000, 7
    h["comm"] = b"client"
    for k, v in fields.items():
        h[k] = v
    return h.tobytes() + payload


def test_sni_and_socket_records_fill_their_columns():
    resolved = []

    def resolve(pid, fd):
        resolved.append((pid, fd))
        return ("10.0.0.2", 51234, "10.0.0.9", 443)

    decoder = RecordDecoder("node-a", 0, {0: "/usr/lib/libssl.so.3"}, resolve)
    sock = SOCKET_INFO.pack(9, 2, 443, bytes([10, 0, 0, 9]) + bytes(12), 1, 0, bytes(16))
    raws = [record(K_SNI, b"api.openai.com"), record(K_SOCKET, sock, func=10),
            record(K_DATA, b"POST / HTTP/1.1\r\n\r\n", offset=0)]
    rows = decoder.decode(raws).to_pylist()
    assert [r["kind"] for r in rows] == ["sni", "socket", "data"]
    assert rows[0]["server_name"] == "api.openai.com" and rows[0]["data"] is None
    s = rows[1]
    assert (s["fd"], s["peer_ip"], s["peer_port"], s["local_ip"], s["local_port"], s["socket_source"]) == \
        (9, "10.0.0.9", 443, "10.0.0.2", 51234, "set_fd")
    assert s["func"] == "SSL_set_fd" and s["direction"] is None and s["data"] is None
    assert resolved == [(42, 9)]
    assert rows[2]["data"] == b"POST / HTTP/1.1\r\n\r\n" and rows[2]["server_name"] is None
    # a socket record of the wrong size is malformed, not misread
    assert decoder.decode([record(K_SOCKET, sock[:20])]).num_rows == 0 and decoder.malformed_records == 1


def fake_proc(root, pid: int, cgroup: str, cmdline: list[str], exe: str) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    # comm with a space and a parenthesis: fields are counted from the last ')'
    (d / "stat").write_text(f"{pid} (we (ird) S 1234 1 1 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in cmdline) + b"\0")
    (d / "cgroup").write_text(f"0::{cgroup}\n")
    os.symlink(exe, d / "exe")
    (root / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")


def test_process_rows_from_proc(tmp_path):
    cid = "ab" * 32
    cgroup = ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_4000_8000_"
              f"000000000001.slice/cri-containerd-{cid}.scope")
    fake_proc(tmp_path, 77, cgroup, ["python", "-m", "agent"], "/usr/bin/python3.11")
    lookups = []
    named = {"pod_name": "agent-0", "pod_namespace": "ml", "container_name": "app",
             "service_account": "agent", "workload_kind": "Deployment", "workload_name": "agent",
             "container_image": "registry.local/agent:2", "pod_labels": '{"app":"agent"}'}
    registry = ProcessRegistry(proc=tmp_path, pod_lookup=lambda uid, c: lookups.append((uid, c)) or named)
    table = pa.table({"pid": pa.array([77, 77], pa.int32()), "comm": ["python", "python"],
                      "uid": pa.array([1000, 1000], pa.int64()), "cgroup_id": pa.array([5, 5], pa.uint64())})
    assert registry.describe_new(table) == 1 and registry.describe_new(table) == 0
    rows = registry.rows([77, 99], "node-a")
    for name in ("ts_wall", "process_start"):  # integer ns: Python datetimes would lose them
        rows = rows.set_column(rows.schema.get_field_index(name), name, rows[name].cast(pa.int64()))
    row = rows.to_pylist()
    assert len(row) == 1  # 99 was never seen
    r = row[0]
    assert (r["kind"], r["pid"], r["ppid"], r["uid"], r["exe"], r["cmdline"]) == \
        ("process", 77, 1234, 1000, "/usr/bin/python3.11", ["python", "-m", "agent"])
    assert r["process_start"] == 1_700_000_000 * 10**9 + 500 * 10**9 // os.sysconf("SC_CLK_TCK")
    assert (r["container_id"], r["container_runtime"], r["pod_uid"]) == \
        (cid, "cri-containerd", "1b2c3d4e-0000-4000-8000-000000000001")
    assert {k: r[k] for k in named} == named  # every field the pod watch names, in its column (format 5)
    assert lookups == [("1b2c3d4e-0000-4000-8000-000000000001", cid)]
    assert r["conn_id"] is None and r["node"] == "node-a"


def test_a_process_gone_before_proc_was_read_keeps_its_cgroup(tmp_path):
    cgroups = tmp_path / "cgroup"
    leaf = cgroups / "system.slice" / "docker-" / "x"
    leaf.mkdir(parents=True)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "stat").write_text("btime 1\n")
    registry = ProcessRegistry(proc=tmp_path / "proc", cgroups=CgroupPaths(cgroups))
    info = registry.read(5, "curl", 0, leaf.stat().st_ino)
    ident = info.identity
    assert not info.from_proc and ident.cgroup_path == "/system.slice/docker-/x" and ident.exe is None
    assert process_rows([info], "n").num_rows == 1 and process_rows([], "n").schema == sf.SCHEMA


def test_tls_libraries_found_by_exports_not_only_by_name(tmp_path):
    libssl = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
    assert exports_ssl(libssl)
    addrs = exported_symbols(libssl, ["SSL_write", "SSL_read", "SSL_nonexistent"])
    assert set(addrs) == {"SSL_write", "SSL_read"} and all(a > 0 for a in addrs.values())
    # a renamed copy is still a TLS library (it exports the symbols); a program that only imports
    # them (curl links libssl dynamically) is not
    renamed = tmp_path / "libcustomtls.so"
    shutil.copy(libssl, renamed)
    assert exports_ssl(str(renamed)) and not exports_ssl(shutil.which("curl"))
    assert not exports_ssl(str(tmp_path / "missing")) and not exports_ssl(__file__)
    # the finder sees this very process's libssl through /proc/self/root when it is mapped
    import ssl  # noqa: F401  (maps libssl into this process)

    found = list(LibraryFinder().tls_files(os.getpid()))
    assert any(f.display_path.endswith("libssl.so.3") and not f.static for f in found)


def test_discovery_looks_only_at_processes_the_filters_capture(tmp_path):
    from recorder.capture.discovery import capture_filter

    for pid, comm, cgroup in ((1, "python3", "/kubepods.slice/a"), (2, "curl", "/system.slice/b")):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "comm").write_text(comm + "\n")
        (d / "cgroup").write_text(f"12:memory:/x\n0::{cgroup}\n")
    assert capture_filter([], [], [], tmp_path)(2)  # no filter: everything
    assert [capture_filter([], [], ["kubepods.slice/a"], tmp_path)(p) for p in (1, 2)] == [True, False]
    assert [capture_filter([], ["curl"], [], tmp_path)(p) for p in (1, 2)] == [False, True]
    assert [capture_filter([1], ["curl"], [], tmp_path)(p) for p in (1, 2)] == [False, False]  # all must hold
    assert not capture_filter([], ["curl"], [], tmp_path)(3)  # gone


def test_socket_table_addresses():
    assert parse_proc_address("0100007F:01BB") == ("127.0.0.1", 443)
    # ::ffff:10.1.2.3 as /proc/net/tcp6 prints it (32-bit words in host order)
    assert parse_proc_address("0000000000000000FFFF00000302010A:1F90") == ("10.1.2.3", 8080)
    assert parse_proc_address("B80D0120000000000000000001000000:0050") == ("2001:db8::1", 80)


def test_socket_record_payload():
    v4 = SOCKET_INFO.pack(7, 2, 443, bytes([93, 184, 216, 34]) + bytes(12), 1, 0, bytes(16))
    assert parse_socket_info(v4) == {"fd": 7, "peer_ip": "93.184.216.34", "peer_port": 443,
                                     "socket_source": "set_fd"}
    v6 = SOCKET_INFO.pack(-1, 10, 8443, bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 9]), 2, 0, bytes(16))
    assert parse_socket_info(v6) == {"fd": None, "peer_ip": "10.0.0.9", "peer_port": 8443,
                                     "socket_source": "thread_connect"}
    unknown = SOCKET_INFO.pack(3, 0, 0, bytes(16), 2, 0, bytes(16))
    assert parse_socket_info(unknown)["peer_ip"] is None
    assert SOCKET_INFO.size == struct.calcsize("<iHH16sB5xH16s") == 48  # struct socket_info, layout 4
