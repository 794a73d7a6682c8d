"""A real S3 protocol server for tests: moto's server mode in a subprocess, which a test can stop and
start again on the same port (a store outage). Its state is in memory: a restart starts empty."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import boto3
from botocore.config import Config

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []  # its output (one line per request), kept for failing tests

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and return once it says it serves (werkzeug's `Running on` line)."""
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        watchdog = threading.Timer(START_TIMEOUT, self.proc.kill)
        watchdog.start()
        try:
            for line in self.proc.stdout:
                self.log.append(line)
                if "Running on" in line:
                    break
            else:
                raise RuntimeError(f"moto server did not start: {''.join(self.log)[-2000:]}")
        finally:
            watchdog.cancel()
        # it logs every request: read on, or the pipe fills and the server blocks
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()

    def _drain(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.log.append(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self):
        """A plain client of this server (the tests' own view of the store: what it holds, as it is,
        even an object whose checksum does not match its bytes)."""
        config = Config(retries={"total_max_attempts": 1}, response_checksum_validation="when_required")
        return boto3.session.Session().client("s3", endpoint_url=self.url, region_name="us-east-1",
                                              config=config, **CREDENTIALS)
