"""The C test programs of testbed/c/, built with gcc (scripts/setup.sh installs gcc and libssl-dev)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

STATIC_LIBSSL = Path("/usr/lib/x86_64-linux-gnu/libssl.a")


def build_static_client(root: Path) -> dict[str, Path]:
    """testbed/c/static_client.c linked statically with OpenSSL: {"static": with symbols, "stripped": the
    same without them}."""
    if shutil.which("gcc") is None or not STATIC_LIBSSL.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("gcc or libssl-dev is not installed (scripts/setup.sh installs them)", pytrace=False)
        pytest.skip("gcc or libssl-dev is not installed")
    static, stripped = root / "static_client", root / "static_client_stripped"
    res = subprocess.run(["gcc", "-O1", "-static", "-o", str(static), str(REPO / "testbed/c/static_client.c"),
                          "-lssl", "-lcrypto", "-lpthread"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    subprocess.run(["strip", "-o", str(stripped), str(static)], check=True, timeout=60)
    return {"static": static, "stripped": stripped}
