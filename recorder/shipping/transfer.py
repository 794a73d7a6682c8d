"""One segment to the store and back: a single PUT carrying the file's digests, then a HEAD that must
show the very bytes (size, and a checksum the store computed).

A PUT is all or nothing on S3: an upload cut halfway stores no object (the store never saw the
announced Content-Length), and the digests sent with it (Content-MD5, x-amz-checksum-sha256) make S3
and MinIO refuse a body that arrives altered. What is verified afterwards is what the store says it
holds: the size, the SHA-256 checksum when the store keeps one, and the ETag when it is the MD5 of the
content (a single-part object, not KMS- or customer-key-encrypted). At least one of the two checksums
must be there and agree: a store that offers neither cannot be verified, and nothing is deleted.

Retries are the shipper's (recorder/shipping/backoff.py), not botocore's: one attempt per call, so
that every retry is counted and waits with the shipper's backoff.
"""

from __future__ import annotations

import base64
import re

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from recorder.shipping.config import UploadConfig
from recorder.shipping.local_segment import LocalSegment

CONTENT_TYPE = "application/vnd.apache.parquet"
# The most one PUT takes (S3's limit); segments are segment_max_bytes (64 MiB) or so.
MAX_SINGLE_PUT = 5 * 1024**3
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")
_ABSENT = {"404", "NoSuchKey", "NotFound"}
_FORBIDDEN = {"403", "Forbidden", "AccessDenied"}


class StoreError(Exception):
    """The store did not take the segment (unreachable, refused, timed out): retried later."""


class VerifyError(StoreError):
    """The store answered, but what it holds is not the segment: uploaded again later."""


def make_client(cfg: UploadConfig):
    """An S3 client for the configured store; credentials from boto3's default chain."""
    config = Config(
        connect_timeout=cfg.connect_timeout_seconds, read_timeout=cfg.read_timeout_seconds,
        retries={"total_max_attempts": 1},
        s3={"addressing_style": cfg.addressing_style},
        # the digests are computed here, from the bytes sent; botocore adds none of its own
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
    )
    return boto3.session.Session().client("s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region,
                                          config=config)


def describe(exc: Exception) -> str:
    """One line for the log: the store's error code and message, or the connection's failure."""
    if isinstance(exc, NoCredentialsError):
        return ("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the DaemonSet takes them "
                "from the Secret oisp-sensor-upload), or give the pod a role")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message') or exc}"
    return str(exc) or type(exc).__name__


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _head(client, bucket: str, key: str, forbidden_is_absent: bool) -> dict | None:
    """The object's metadata, or None when there is none. Without s3:ListBucket, S3 answers 403 for a
    missing key: taken as absent before an upload, a failed verification after it."""
    try:
        return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in _ABSENT or (forbidden_is_absent and code in _FORBIDDEN):
            return None
        if code in _FORBIDDEN:
            raise VerifyError("the store refuses to show the object (403): the policy needs "
                              "s3:GetObject") from None
        raise StoreError(describe(exc)) from None
    except BotoCoreError as exc:
        raise StoreError(describe(exc)) from None


def mismatch(head: dict, segment: LocalSegment) -> str | None:
    """Why the object described by `head` is not the segment, or None when it is."""
    size = head.get("ContentLength")
    if size != segment.size:
        return f"the object has {size} bytes, the segment {segment.size}"
    verified = False  # by at least one checksum the store computed
    sha256 = head.get("ChecksumSHA256")
    if sha256 is not None:
        if sha256 != _b64(segment.sha256):
            return "the object's SHA-256 differs from the segment's"
        verified = True
    etag = str(head.get("ETag", "")).strip('"')
    encrypted = head.get("ServerSideEncryption") not in (None, "AES256") or head.get("SSECustomerAlgorithm")
    if _MD5_ETAG.fullmatch(etag) and not encrypted:
        if etag != segment.md5.hex():
            return "the object's MD5 (ETag) differs from the segment's"
        verified = True
    if not verified:
        return "the store returned neither a SHA-256 checksum nor an MD5 ETag: it cannot be verified"
    return None


def already_there(client, bucket: str, key: str, segment: LocalSegment) -> bool:
    """True when the store already holds exactly this segment at `key` (an upload of an earlier run
    whose local deletion did not happen); an object that differs is uploaded over."""
    head = _head(client, bucket, key, forbidden_is_absent=True)
    return head is not None and mismatch(head, segment) is None


def upload(client, bucket: str, key: str, segment: LocalSegment) -> None:
    """PUT the segment at `key`, then verify what the store holds. StoreError when it did not take it,
    VerifyError when what it holds is not the segment."""
    if segment.size > MAX_SINGLE_PUT:
        raise StoreError(f"{segment.size} bytes is over what one PUT takes ({MAX_SINGLE_PUT}): lower "
                         "recorder.segment_max_bytes")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=segment.body(), ContentLength=segment.size,
                          ContentType=CONTENT_TYPE, ContentMD5=_b64(segment.md5),
                          ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(segment.sha256))
    except (BotoCoreError, ClientError) as exc:
        raise StoreError(describe(exc)) from None
    head = _head(client, bucket, key, forbidden_is_absent=False)
    if head is None:
        raise VerifyError("the object is not there after its upload")
    reason = mismatch(head, segment)
    if reason:
        raise VerifyError(reason)
