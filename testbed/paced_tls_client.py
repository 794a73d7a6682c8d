"""A Python `ssl` client that sends numbered requests over one TLS connection at a steady pace, and
reports each one on stdout as soon as its answer has been read: `<i> <CLOCK_MONOTONIC ns>`.

usage: python -m testbed.paced_tls_client PORT CA_FILE INTERVAL_MS BODY_SIZE
Runs until killed. The time of line i is after request i's SSL_write returned, on the clock of
the recorder's `ts_mono_ns`, so a test can tell which requests were made before a given moment.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time

from testbed.ssl_client import payload, read_response


def request(i: int, size: int) -> bytes:
    return (b"POST /paced/%d HTTP/1.1\r\nhost: localhost\r\ncontent-length: %d\r\n\r\n" % (i, size)
            + payload(size, i))


def main() -> None:
    port, ca_file, interval, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ctx = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as conn:
            i = 0
            while True:
                conn.sendall(request(i, size))
                read_response(conn)
                print(i, time.clock_gettime_ns(time.CLOCK_MONOTONIC), flush=True)
                i += 1
                time.sleep(interval / 1000)  # the workload's pace, not a synchronisation


if __name__ == "__main__":
    main()
