"""A throwaway certificate authority (trustme) and files clients can be pointed at."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class TestPKI:
    ca: trustme.CA
    cert: trustme.LeafCert
    ca_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def make_pki(directory: Path, *hostnames: str) -> TestPKI:
    """A CA and one leaf certificate for the host names (default: localhost and 127.0.0.1)."""
    ca = trustme.CA()
    cert = ca.issue_cert(*(hostnames or ("localhost", "127.0.0.1")))
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return TestPKI(ca, cert, ca_file)
