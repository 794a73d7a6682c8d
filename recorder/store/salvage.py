"""At start-up, recover what a killed recorder left in the segments directory.

- an in-progress stream: its complete batches become a normal segment whose footer stats say it
  was salvaged (`salvaged`, `salvaged_rows`, `truncated_tail`); a stream whose schema cannot be read
  is renamed aside to `NAME.corrupt`; an empty one, or one without a complete batch, is removed;
- a stream whose segment was already published (the kill came just after the rename): removed;
- a half-converted Parquet file: replaced by the stream's conversion, or removed if its stream is gone;
- an in-progress file of the old format (Parquet without a footer): published if it does have its
  footer, else renamed aside to `NAME.footerless.corrupt`.
Each leftover gets one log line. A stream another live recorder holds (flock) is left alone.
Only the recorder's own files are leftovers (owned.py: regular, ours, named as the recorder names
them); anything else with a leftover's name is logged and left alone, and a segment planted under
a stream's published name does not get the stream removed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from contract import segment_names as names
from recorder.store.conversion import StreamBusy, UnreadableStream, fsync_dir, publish
from recorder.store.owned import own_file

log = logging.getLogger("oisp.record")

PUBLISHED = "published"
SET_ASIDE = "set_aside"
REMOVED = "removed"
LEFT = "left"  # in use by a live recorder, or could not be converted now (disk full)


@dataclass
class Leftover:
    path: Path
    outcome: str
    rows: int = 0
    result: Path | None = None  # the published segment, or where the file was set aside


def salvage(directory: Path) -> list[Leftover]:
    """Recover every leftover in `directory`; returns what was done with each."""
    out = []
    for path in sorted(directory.iterdir()):
        if name := names.hidden_name(path, names.IN_PROGRESS_SUFFIX):
            if (st := own_file(path, name)) is not None:
                out.append(_salvage_stream(path, name, st))
        elif name := names.hidden_name(path, names.LEGACY_IN_PROGRESS_SUFFIX):
            if own_file(path, name) is not None:
                out.append(_salvage_legacy(path, name))
    # Converting a stream again overwrote its interrupted conversion; what remains is either a
    # live recorder's (its stream is still there, locked) or an orphan.
    for path in sorted(directory.iterdir()):
        name = names.hidden_name(path, names.CONVERTING_SUFFIX)
        if not name or os.path.lexists(names.in_progress_path(directory, name)):
            continue
        if own_file(path, name) is not None:
            path.unlink(missing_ok=True)
            log.info("removed %s: an interrupted conversion whose stream is gone", path.name)
            out.append(Leftover(path, REMOVED))
    return out


def _salvage_stream(path: Path, name: str, st: os.stat_result) -> Leftover:
    directory = path.parent
    final = names.final_path(directory, name)
    if os.path.lexists(final) and own_file(final, name) is not None:
        path.unlink()
        log.info("removed %s: its segment was already published", path.name)
        return Leftover(path, REMOVED)
    if st.st_size == 0:  # killed between creating the file and its first batch
        path.unlink()
        log.warning("removed leftover %s: it is empty", path.name)
        return Leftover(path, REMOVED)
    try:
        done = publish(path, name, {}, salvage=True)
    except StreamBusy:
        log.warning("left %s alone: another recorder is writing it", path.name)
        return Leftover(path, LEFT)
    except UnreadableStream as exc:
        aside = names.corrupt_path(directory, name)
        os.rename(path, aside)
        log.warning("cannot read leftover %s at all (%s): renamed it to %s", path.name, exc, aside.name)
        return Leftover(path, SET_ASIDE, result=aside)
    except OSError as exc:
        log.error("cannot salvage %s now (%s): left in place for the next start", path.name, exc)
        return Leftover(path, LEFT)
    if done.path is None:
        log.warning("removed leftover %s: it held no complete batch (%s)", path.name,
                    done.truncated or "no rows")
        return Leftover(path, REMOVED)
    tail = f"; a cut-short last batch was dropped ({done.truncated})" if done.truncated else ""
    log.warning("salvaged %d rows (%d batches) of an interrupted recorder from %s into %s%s",
                done.rows, done.batches, path.name, done.path.name, tail)
    return Leftover(path, PUBLISHED, done.rows, done.path)


def _salvage_legacy(path: Path, name: str) -> Leftover:
    directory = path.parent
    try:
        rows = pq.read_metadata(path).num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        aside = names.corrupt_path(directory, name, legacy=True)
        os.rename(path, aside)
        log.warning("set aside %s, an in-progress segment of the old format (Parquet without its footer, "
                    "unreadable: %s): renamed it to %s", path.name, exc, aside.name)
        return Leftover(path, SET_ASIDE, result=aside)
    final = names.final_path(directory, name)
    os.rename(path, final)  # the old writer died between its footer's fsync and the rename
    fsync_dir(directory)
    log.warning("published %s (%d rows), a complete segment of the old format left unpublished",
                final.name, rows)
    return Leftover(path, PUBLISHED, rows, final)
