"""Hostile local users and planted files in the segments directory: no file is written through a
link, the directory must be the recorder's own, and salvage and the quota take only the recorder's
own files. Pure Python on real files (no eBPF); tests that hand a file to another uid need root."""

from __future__ import annotations

import logging
import os
import stat
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from contract import segment_format as sf  # noqa: E402
from contract import segment_names as names  # noqa: E402
from helpers.segment_tables import segment_table  # noqa: E402
from recorder.capture.preflight import PreflightError, prepare_segments_dir  # noqa: E402
from recorder.store import owned  # noqa: E402
from recorder.store.conversion import publish  # noqa: E402
from recorder.store.inprogress import InProgressSegment  # noqa: E402
from recorder.store.quota import enforce_quota, make_room, published_segments  # noqa: E402
from recorder.store.salvage import salvage  # noqa: E402
from recorder.store.writer import SegmentWriter  # noqa: E402

NAME = "node-a-20260101T000000-abc-000000"
OTHER_UID = 4321
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another uid needs root")


@pytest.fixture(autouse=True)
def fresh_log_memory():
    owned._reported.clear()  # each test sees its own "left alone" lines


def table(rows: int = 10) -> pa.Table:
    return segment_table(rows, {"kind": ["data"] * rows, "data": [os.urandom(100) for _ in range(rows)]})


def stream(directory: Path, name: str = NAME) -> Path:
    """An in-progress stream as a killed recorder leaves it."""
    seg = InProgressSegment(names.in_progress_path(directory, name), sf.SCHEMA)
    seg.append(table())
    seg.close()
    return seg.path


def segment(directory: Path, name: str, size: int = 0) -> Path:
    path = names.final_path(directory, name)
    pq.write_table(table(), path)
    if size:
        os.truncate(path, size)
    return path


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(b"precious")
    return path


@pytest.fixture
def segments(tmp_path) -> Path:
    d = tmp_path / "segments"
    prepare_segments_dir(d)
    return d


# ---- files the recorder creates ---------------------------------------------------------------

def test_planted_link_as_the_conversion_file_is_never_written_through(segments, victim, caplog):
    s = stream(segments)
    planted = names.converting_path(segments, NAME)
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError, match="a symbolic link"):
        publish(s, NAME, {})
    assert victim.read_bytes() == b"precious" and planted.is_symlink() and s.exists()
    with caplog.at_level(logging.ERROR, logger="oisp.record"):
        (left,) = salvage(segments)  # at start-up: the stream is kept for a later try
    assert left.outcome == "left" and "cannot salvage" in caplog.text
    assert victim.read_bytes() == b"precious" and planted.is_symlink()
    assert not names.final_path(segments, NAME).exists()


def test_stale_conversion_file_of_ours_is_replaced(segments):
    s = stream(segments)
    stale = names.converting_path(segments, NAME)
    stale.write_bytes(b"PAR1 half a file")
    done = publish(s, NAME, {})
    assert done.path == names.final_path(segments, NAME) and not stale.exists()
    assert pq.read_table(done.path).num_rows == 10
    assert stat.S_IMODE(done.path.stat().st_mode) == 0o600


def test_in_progress_stream_is_never_opened_through_a_link(segments, victim):
    path = names.in_progress_path(segments, NAME)
    path.symlink_to(victim)
    with pytest.raises(FileExistsError):
        InProgressSegment(path, sf.SCHEMA)
    assert victim.read_bytes() == b"precious"


def test_write_check_link_is_refused_and_its_target_untouched(segments, victim):
    (segments / ".oisp-write-check").symlink_to(victim)
    with pytest.raises(PreflightError, match=r"cannot create \.oisp-write-check: .*symbolic link"):
        prepare_segments_dir(segments)
    assert victim.read_bytes() == b"precious"


def test_stale_write_check_of_ours_is_removed(segments):
    (segments / ".oisp-write-check").write_bytes(b"")
    prepare_segments_dir(segments)
    assert list(segments.iterdir()) == []


# ---- the segments directory -------------------------------------------------------------------

def test_existing_directory_of_ours_is_made_0700(tmp_path):
    d = tmp_path / "s"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    prepare_segments_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_directory_that_is_a_link_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    os.chmod(real, 0o755)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(PreflightError, match="is a symbolic link: refusing it"):
        prepare_segments_dir(tmp_path / "link")
    assert stat.S_IMODE(real.stat().st_mode) == 0o755  # not chmodded through the link
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PreflightError, match="is a symbolic link"):
        prepare_segments_dir(tmp_path / "dangling")
    assert not (tmp_path / "nowhere").exists()


def test_file_is_not_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PreflightError, match="is not a directory"):
        prepare_segments_dir(tmp_path / "f")


@needs_root
def test_directory_of_another_uid_is_refused_and_not_chmodded(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    os.chmod(d, 0o777)
    os.chown(d, OTHER_UID, OTHER_UID)
    with pytest.raises(PreflightError, match=f"belongs to uid {OTHER_UID}, not to the recorder's uid 0"):
        prepare_segments_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o777


# ---- salvage --------------------------------------------------------------------------------

def test_salvage_leaves_a_planted_fifo_alone_without_blocking(segments, caplog):
    fifo = names.in_progress_path(segments, NAME)
    os.mkfifo(fifo)
    result = []
    t = threading.Thread(target=lambda: result.append(salvage(segments)), daemon=True)
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        t.start()
        t.join(10)
    assert not t.is_alive(), "salvage blocked on a FIFO"
    assert result == [[]] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert f"left '{fifo.name}' alone, the recorder did not write it: not a regular file" in caplog.text


def test_salvage_leaves_a_link_to_a_stream_alone(segments, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = stream(elsewhere)
    link = names.in_progress_path(segments, NAME)
    link.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        assert salvage(segments) == []
    assert link.is_symlink() and target.exists() and not names.final_path(segments, NAME).exists()
    assert "alone, the recorder did not write it: a symbolic link" in caplog.text


def test_salvage_leaves_hard_links_and_foreign_names_alone(segments, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.link(stream(elsewhere), names.in_progress_path(segments, NAME))
    bad = stream(segments, "bad name")  # a space: never a name the recorder writes
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        assert salvage(segments) == []
    assert bad.exists() and sorted(p.name for p in segments.glob("*.parquet")) == []
    assert f"left '{names.in_progress_path(segments, NAME).name}' alone" in caplog.text
    assert "it has 2 hard links" in caplog.text
    assert "left '.bad name.arrows.inprogress' alone, the recorder did not write it: a name the " \
           "recorder never writes" in caplog.text


@needs_root
def test_salvage_leaves_another_users_stream_alone(segments, caplog):
    planted = stream(segments)
    os.chown(planted, OTHER_UID, OTHER_UID)
    orphan = names.converting_path(segments, "node-a-20260101T000000-abc-000001")
    orphan.write_bytes(b"x")
    os.chown(orphan, OTHER_UID, OTHER_UID)
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        assert salvage(segments) == []
    assert planted.exists() and orphan.exists() and list(segments.glob("*.parquet")) == []
    assert f"owned by uid {OTHER_UID}, not by the recorder's uid 0" in caplog.text


@needs_root
def test_planted_segment_does_not_get_a_real_stream_removed(segments):
    real = stream(segments)
    planted = segment(segments, NAME)  # as if already published
    os.chown(planted, OTHER_UID, OTHER_UID)
    (left,) = salvage(segments)
    assert left.outcome == "published" and not real.exists()
    assert pq.read_metadata(names.final_path(segments, NAME)).num_rows == 10
    assert os.lstat(names.final_path(segments, NAME)).st_uid == os.geteuid()


# ---- the quota --------------------------------------------------------------------------------

def test_quota_neither_counts_nor_deletes_links_fifos_or_foreign_names(segments, victim, tmp_path, caplog):
    mine = [segment(segments, f"node-a-20260101T00000{i}-abc-00000{i}") for i in range(2)]
    big = tmp_path / "big.parquet"
    big.write_bytes(b"x" * 1_000_000)
    (segments / "a-0-link.parquet").symlink_to(big)  # sorts first: would be deleted first
    (segments / "a-1-victim.parquet").symlink_to(victim)
    os.mkfifo(segments / "a-2-fifo.parquet")
    os.link(big, segments / "a-3-hardlink.parquet")
    (segments / "a 4 bad name.parquet").write_bytes(b"x" * 1_000_000)
    with caplog.at_level(logging.WARNING, logger="oisp.record"):
        assert [p for p, _ in published_segments(segments)] == mine
        total = sum(p.stat().st_size for p in mine)
        assert enforce_quota(segments, total) == []  # the planted megabytes count for nothing
        first = mine[0].stat().st_size
        assert make_room(segments, 1) == [(mine[0], first)]
    assert victim.read_bytes() == b"precious" and big.exists()
    assert (segments / "a 4 bad name.parquet").exists() and (segments / "a-0-link.parquet").is_symlink()
    for reason in ("a symbolic link", "not a regular file", "it has 2 hard links",
                   "a name the recorder never writes"):
        assert reason in caplog.text
    # looked at again after every segment: each planted file is still logged once
    lines = caplog.text.count("the recorder did not write it")
    published_segments(segments)
    assert caplog.text.count("the recorder did not write it") == lines == 5


@needs_root
def test_quota_ignores_another_users_segments(segments):
    mine = segment(segments, "node-b-20260101T000000-abc-000000")
    foreign = segment(segments, "node-a-20260101T000000-abc-000000", size=1_000_000)  # sorts first
    os.chown(foreign, OTHER_UID, OTHER_UID)
    size = mine.stat().st_size
    assert published_segments(segments) == [(mine, size)]
    assert enforce_quota(segments, 1) == []  # alone over the quota: kept, the foreign one not counted
    assert make_room(segments, 10**9) == [(mine, size)]
    assert foreign.exists()


def test_writer_names_stay_within_the_naming_scheme(segments):
    w = SegmentWriter(segments, "../host name\n", "abc", {}, max_bytes=1 << 40, max_seconds=3600)
    w.write(table())
    final = w.close()
    assert final.parent == segments and names.is_name(names.published_name(final))
    assert final.name.startswith("_host_name_-")
    assert pq.read_metadata(final).metadata[sf.META_NODE] == b"../host name\n"  # the footer keeps it
