"""The segment format: the one contract between the recorder and the analyzer.

A segment is a zstd-compressed Parquet file with one row per captured chunk or connection event.
This module holds only the Arrow schema and the names that go with it, and imports nothing from
bcc, so the analyzer (which runs on laptops without eBPF) can read it. docs/segment-format.md
explains every column; change both together and bump FORMAT_VERSION.
"""

from __future__ import annotations

import pyarrow as pa

FORMAT_VERSION = "5"
# Versions the analyzer reads: 1 lacks the identity columns, 1 and 2 lack tls_stack, 1 to 4 the workload
# columns (they read as nulls).
READABLE_VERSIONS = ("1", "2", "3", "4", "5")
# Parquet footer (key-value metadata) keys
META_VERSION = b"oisp.segment.version"
META_NODE = b"oisp.segment.node"
META_RUN = b"oisp.segment.run_id"
META_LIBRARIES = b"oisp.segment.libraries"  # JSON: lib_id -> path, for the probes of this run
META_STATS = b"oisp.segment.stats"  # JSON: the recorder's running totals when the file was closed

SEGMENT_SUFFIX = ".parquet"
# Files being written carry this prefix and suffix, so `*.parquet` globs never match them.
IN_PROGRESS_PREFIX = "."
IN_PROGRESS_SUFFIX = ".parquet.inprogress"

KIND_DATA = "data"
KIND_GAP = "gap"
KIND_OPEN = "open"
KIND_CLOSE = "close"
KIND_SNI = "sni"  # the TLS server name the client asked for (server_name)
KIND_SOCKET = "socket"  # the connection's socket: fd, peer and local address
KIND_PROCESS = "process"  # who a pid is: one row per pid per segment (no conn_id)

SOCKET_SOURCE_SET_FD = "set_fd"  # SSL_set_fd named the fd: exact
SOCKET_SOURCE_THREAD_CONNECT = "thread_connect"  # the handshaking thread's last connect(): inferred
SOCKET_SOURCE_GO_CONN = "go_conn"  # the fd under a Go *tls.Conn, read from the program's memory
SOCKET_SOURCE_SYSCALL = "syscall"  # (version 4) plaintext: the system calls' fd, both ends from the kernel

TLS_STACK_OPENSSL = "openssl"  # the OpenSSL API (SSL_read/SSL_write): a libssl, or a program carrying it
TLS_STACK_GO = "go"  # Go's crypto/tls, compiled into the program
TLS_STACK_PLAINTEXT = "plaintext"  # (version 4) no TLS: HTTP read and written by system calls on a socket

DIRECTION_EGRESS = "egress"  # the application wrote these bytes (SSL_write*)
DIRECTION_INGRESS = "ingress"  # the application read these bytes (SSL_read*)

GAP_RINGBUF_FULL = "ringbuf_full"
GAP_OVER_LIMIT = "over_capture_limit"
GAP_READ_FAULT = "read_fault"
GAP_UNEXPLAINED = "unexplained"  # an offset jump the kernel could not even report

_dict = pa.dictionary(pa.int32(), pa.string())

SCHEMA = pa.schema(
    [
        pa.field("kind", _dict, nullable=False),
        pa.field("ts_wall", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("ts_mono_ns", pa.int64(), nullable=False),
        pa.field("node", _dict, nullable=False),
        pa.field("pid", pa.int32(), nullable=False),
        pa.field("tid", pa.int32(), nullable=False),
        pa.field("uid", pa.int64(), nullable=False),
        pa.field("comm", _dict, nullable=False),
        pa.field("cgroup_id", pa.uint64(), nullable=False),
        pa.field("conn_id", _dict),  # null only on process rows
        pa.field("ssl_ptr", pa.uint64()),
        pa.field("conn_gen", pa.uint64()),
        pa.field("direction", _dict),
        pa.field("func", _dict),
        pa.field("stream_offset", pa.uint64()),
        pa.field("length", pa.uint32()),
        pa.field("call_len", pa.uint64()),
        pa.field("data", pa.binary()),
        pa.field("gap_reason", _dict),
        pa.field("egress_bytes", pa.uint64()),
        pa.field("ingress_bytes", pa.uint64()),
        pa.field("lib_path", _dict),
        # version 2: connection identity (sni and socket rows)
        pa.field("server_name", _dict),
        pa.field("fd", pa.int32()),
        pa.field("peer_ip", _dict),
        pa.field("peer_port", pa.int32()),
        pa.field("local_ip", _dict),
        pa.field("local_port", pa.int32()),
        pa.field("socket_source", _dict),
        # version 2: process identity (process rows)
        pa.field("ppid", pa.int32()),
        pa.field("exe", _dict),
        pa.field("cmdline", pa.list_(pa.string())),
        pa.field("process_start", pa.timestamp("ns", tz="UTC")),
        pa.field("cgroup_path", _dict),
        pa.field("container_id", _dict),
        pa.field("container_runtime", _dict),
        pa.field("pod_uid", _dict),
        pa.field("pod_name", _dict),
        pa.field("pod_namespace", _dict),
        pa.field("container_name", _dict),
        # version 3: which TLS implementation produced the row (null on process rows)
        pa.field("tls_stack", _dict),
        # version 5: the pod's owner and what it runs as (process rows)
        pa.field("service_account", _dict),
        pa.field("workload_kind", _dict),
        pa.field("workload_name", _dict),
        pa.field("container_image", _dict),
        pa.field("pod_labels", _dict),
    ]
)

DICTIONARY_COLUMNS = [f.name for f in SCHEMA if pa.types.is_dictionary(f.type)]


def conn_id(pid: int, ssl_ptr: int, conn_gen: int) -> str:
    """The connection key as one string: unique per node across recorder runs (see docs)."""
    return f"{pid}-{ssl_ptr:x}-{conn_gen}"
