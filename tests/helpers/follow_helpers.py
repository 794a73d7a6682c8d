"""Segments for live-mode tests: committed fixtures cut into several segments as the recorder would
have rotated them, published into a directory one by one, and the one-shot analyzer's events on the
same segments as ground truth."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conftest import BIN, GOLDEN_KEY_ARGS
from helpers.analyzer_inputs import FIXTURES


def split_segment(src: Path, dest: Path, parts: int, cuts: tuple[int, ...] = ()) -> list[Path]:
    """Cut one segment into `parts` consecutive segments (and at the rows `cuts`), named as the
    recorder names them (`<node>-<time>-<run>-<sequence>`). Like the recorder, each part starts with
    a process row for every pid that has rows in it (the latest one before the cut)."""
    table = pq.read_table(src)
    prefix = src.name.rsplit("-", 1)[0]
    kinds = table.column("kind").cast(pa.string())
    is_process = pc.equal(kinds, "process")
    bounds = sorted({round(i * table.num_rows / parts) for i in range(parts + 1)} | set(cuts))
    out = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        piece = table.slice(a, b - a)
        pids = set(pc.unique(piece.filter(pc.invert(is_process.slice(a, b - a))).column("pid")).to_pylist())
        earlier = table.slice(0, a).filter(is_process.slice(0, a))
        keep = []
        for pid in sorted(pids):
            idx = [j for j, p in enumerate(earlier.column("pid").to_pylist()) if p == pid]
            if idx:
                keep.append(earlier.slice(idx[-1], 1))
        piece = pa.concat_tables([*keep, piece]) if keep else piece
        path = dest / f"{prefix}-{i:06d}.parquet"
        pq.write_table(piece, path, compression="zstd")
        out.append(path)
    return out


def interleaved(src: Path, dest: Path) -> tuple[Path, int]:
    """The segment's traffic twice, as on a busy node: a copy (connection ids renamed) whose first
    connection opens just before the original's first connection sends its second request. Returns
    the file and the row at which the copy begins, a place to cut: there, a connection with an
    exchange already finished before the cut goes on after it, beside one that begins."""
    table = pq.read_table(src)
    rows = table.select(["kind", "conn_id", "direction"]).to_pylist()
    ts = table.column("ts_wall").cast(pa.int64()).to_pylist()
    first = next(r["conn_id"] for r in rows if r["conn_id"])
    mine = [i for i, r in enumerate(rows) if r["conn_id"] == first]
    # the second request: the first egress data row after an ingress one
    seen_ingress = False
    for i in mine:
        if rows[i]["direction"] == "ingress":
            seen_ingress = True
        elif rows[i]["direction"] == "egress" and seen_ingress:
            second = i
            break
    shift = ts[second] - ts[mine[0]] - 1000
    conns = [None if c is None else c + "0" for c in table.column("conn_id").to_pylist()]
    copy = table.set_column(table.schema.get_field_index("conn_id"), "conn_id",
                            pa.array(conns, pa.string()).dictionary_encode())
    shifted = pa.array([t + shift for t in ts], pa.int64()).cast(table.schema.field("ts_wall").type)
    copy = copy.set_column(copy.schema.get_field_index("ts_wall"), "ts_wall", shifted)
    merged = pa.concat_tables([table, copy.cast(table.schema)]).sort_by("ts_wall")  # a stable sort
    path = dest / src.name
    pq.write_table(merged.replace_schema_metadata(table.schema.metadata), path, compression="zstd")
    merged_ts = merged.column("ts_wall").cast(pa.int64()).to_pylist()
    return path, merged_ts.index(ts[mine[0]] + shift)


def make_parts(dest: Path, spec: dict[str, int]) -> list[Path]:
    """Fixtures (name -> number of parts) cut into segments in dest, in name order."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, parts in spec.items():
        src = next((FIXTURES / "segments" / name).glob("*.parquet"))
        paths += split_segment(src, dest, parts)
    return sorted(paths)


def publish(src: Path, directory: Path) -> Path:
    """As the recorder publishes: a hidden file renamed into place, so `*.parquet` is complete."""
    hidden = directory / f".{src.name}.converting"
    shutil.copyfile(src, hidden)
    os.replace(hidden, directory / src.name)
    return directory / src.name


def one_shot_lines(directory: Path, tmp: Path) -> list[str]:
    out = tmp / "one-shot.jsonl"
    subprocess.run([str(BIN / "oisp-analyze"), str(directory), "--out", str(out), *GOLDEN_KEY_ARGS],
                   check=True, capture_output=True)
    return out.read_text().splitlines()


def output_lines(path: Path, keep: int = 50) -> list[str]:
    """Every line of the events file and its rotations, oldest first."""
    files = [Path(f"{path}.{i}") for i in range(keep, 0, -1)] + [path]
    return [line for f in files if f.exists() for line in f.read_text().splitlines()]


def assert_same_events(lines: list[str], truth: list[str]) -> None:
    """Each event exactly once, byte for byte as the one-shot analyzer writes it."""
    ids = Counter(json.loads(line)["event_id"] for line in lines)
    assert [i for i, n in ids.items() if n > 1] == [], "events written twice"
    assert sorted(lines) == sorted(truth)


def read_checkpoint(output: Path) -> dict | None:
    try:
        return json.loads((output.parent / f".{output.name}.checkpoint").read_text())
    except (FileNotFoundError, ValueError):  # not yet written, or damaged on purpose by a test
        return None


def wait_for(predicate, timeout: float = 30, what: str = "condition", proc=None):
    """Poll a progress signal (checkpoint, output, metrics) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"analyzer exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_follow(segments: Path, output: Path, log: Path, *extra: str) -> subprocess.Popen:
    """Start the live analyzer; return once it says it follows (its signal handlers are in place)."""
    def started() -> int:
        return log.read_text().count(" following ") if log.exists() else 0

    before = started()
    # the same hash key as one_shot_lines: their events are compared byte for byte
    key = [] if "--config" in extra else GOLDEN_KEY_ARGS
    proc = subprocess.Popen([str(BIN / "oisp-analyze"), str(segments), "--follow", "--out", str(output),
                             *key, *extra], stdout=open(log, "a"), stderr=subprocess.STDOUT)
    wait_for(lambda: started() > before, what="the analyzer to start following", proc=proc)
    return proc


def processed(output: Path) -> set[str]:
    cp = read_checkpoint(output)
    return set(cp["processed"]) if cp and isinstance(cp.get("processed"), list) else set()
