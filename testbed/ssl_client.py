"""A Python `ssl` client that sends known payloads over one TLS connection and reads the answers
into small buffers. Prints a JSON ground truth (pid, bytes sent, bytes received) on stdout.

usage: python -m testbed.ssl_client PORT CA_FILE SIZE [SIZE ...]
Each SIZE is one request whose body has that many bytes, sent with a single sendall().
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import sys


def payload(size: int, seed: int) -> bytes:
    """Deterministic, non-repeating bytes, so misplaced chunks cannot go unnoticed."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


def recv_exactly(conn: ssl.SSLSocket, n: int, bufsize: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(min(bufsize, n - len(data)))
        if not chunk:
            raise EOFError("server closed early")
        data += chunk
    return bytes(data)


def read_response(conn: ssl.SSLSocket) -> bytes:
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        head += recv_exactly(conn, 1, 1)  # one byte at a time: the smallest possible SSL_read
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return bytes(head) + recv_exactly(conn, length, 7)  # then 7-byte reads


def main() -> None:
    port, ca_file, sizes = int(sys.argv[1]), sys.argv[2], [int(s) for s in sys.argv[3:]]
    ctx = ssl.create_default_context(cafile=ca_file)
    sent = bytearray()
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as conn:
            for i, size in enumerate(sizes):
                body = payload(size, i)
                request = (b"POST /upload/%d HTTP/1.1\r\nhost: localhost\r\ncontent-length: %d\r\n\r\n"
                           % (i, size)) + body
                conn.sendall(request)
                sent += request
                received += read_response(conn)
    comm = open("/proc/self/comm").read().strip()
    print(json.dumps({"pid": os.getpid(), "comm": comm, "sent": sent.hex(), "received": received.hex()}))


if __name__ == "__main__":
    main()
