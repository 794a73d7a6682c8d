"""Files at URLs, through fsspec: a local path, file://, s3:// (s3fs; an S3-compatible store with an
endpoint URL: the option, else AWS_ENDPOINT_URL, which botocore reads itself) or any other protocol
fsspec knows. Credentials come from the store's usual chain (for S3: the environment, the shared
config and credentials files, the instance or pod role)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs


@dataclass(frozen=True)
class Location:
    """A URL and how to reach it (picklable: Dask ships it to the workers, which connect themselves)."""

    url: str
    options: dict = field(default_factory=dict)  # fsspec storage options (s3: endpoint_url)

    def fs(self) -> tuple[AbstractFileSystem, str]:
        """The filesystem and the path inside it."""
        fs, path = url_to_fs(self.url, **self.options)
        return fs, path.rstrip("/") or path

    def join(self, *parts: str) -> Location:
        return Location("/".join([self.url.rstrip("/"), *parts]), self.options)


def location(url: str, endpoint_url: str | None = None) -> Location:
    """The Location of a URL; `endpoint_url` applies to s3:// only."""
    if not url:
        raise ValueError("an empty URL")
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    options = {"endpoint_url": endpoint_url} if endpoint_url and protocol in ("s3", "s3a") else {}
    return Location(url, options)


def is_local(fs: AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def put(local: Path, fs: AbstractFileSystem, path: str) -> None:
    """Upload a finished local file. An object store makes the object appear whole; a local directory
    gets it under a hidden temporary name first, renamed into place."""
    if not is_local(fs):
        fs.put_file(str(local), path)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(local, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)

