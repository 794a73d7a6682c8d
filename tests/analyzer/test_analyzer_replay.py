"""The analyzer on segments recorded by the real recorder (tests/fixtures): golden exchanges,
byte-identical on every run, and what they must contain."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import BIN
from helpers.analyzer_inputs import FIXTURES
from helpers.hostile_inputs import damage_file


def analyze(path, out) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "oisp-analyze"), str(path), "--exchanges", str(out)],
                          capture_output=True, text=True, timeout=120)


# h1_v1: the same workload recorded in segment format version 1, which the analyzer still reads
@pytest.mark.parametrize("name", ["h1", "h2", "h1_v1"])
def test_golden_exchanges_byte_identical(name, tmp_path):
    golden = (FIXTURES / "golden" / f"{name}.exchanges.jsonl").read_bytes()
    for i in range(2):
        out = tmp_path / f"run{i}.jsonl"
        result = analyze(FIXTURES / "segments" / name, out)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == golden


def load(name):
    return [json.loads(line) for line in (FIXTURES / "golden" / f"{name}.exchanges.jsonl").open()]


def test_http1_keepalive_chunked_gzip_sse():
    xs = load("h1")
    assert [x["path"] for x in xs] == ["/echo", "/gzip", "/chunked", "/sse?n=8", "/echo", "/big?n=1048576",
                                       "/missing"]
    assert len({x["conn_id"] for x in xs}) == 1  # keep-alive: one connection
    assert all(x["complete"] and x["http_version"] == "1.1" for x in xs)
    gz = xs[1]["response"]["body"]
    assert gz["encoding"] == "gzip" and gz["wire_bytes"] < gz["decoded_bytes"]
    assert json.loads(gz["text"])["text"].startswith("compressed ")
    assert ["transfer-encoding", "chunked"] in xs[2]["response"]["headers"]
    assert xs[2]["response"]["body"]["text"] == "".join(f"part {i};" for i in range(10))
    sse = xs[3]["response"]["body"]["sse"]
    assert len(sse) == 10 and sse[-1]["data"] == "[DONE]"
    assert sse[1]["data"] == "a line with [DONE] inside\nand a second line"  # not the end
    assert xs[4]["request"]["body"]["decoded_bytes"] == 300_000
    big = xs[5]["response"]["body"]
    assert big["decoded_bytes"] == 1 << 20 and big["omitted"]
    assert xs[6]["status"] == 404
    for x in xs:
        r = x["request"]
        assert r["start_ns"] <= r["end_ns"] <= x["response"]["first_byte_ns"] <= x["response"]["end_ns"]


def test_http2_multiplexed_streams():
    xs = load("h2")
    assert len({x["conn_id"] for x in xs}) == 1 and all(x["http_version"] == "2" for x in xs)
    assert len(xs) == 28 and all(x["complete"] for x in xs)
    sse = [x for x in xs if x["path"].startswith("/sse")]
    assert len(sse) == 24
    # the streams really were concurrent: all 24 were open at once
    assert max(x["request"]["start_ns"] for x in sse) < min(x["response"]["end_ns"] for x in sse)
    for x in sse:
        n = int(x["path"].split("n=")[1].split("&")[0])
        events = x["response"]["body"]["sse"]
        assert len(events) == n + 2 and events[-1]["data"] == "[DONE]"
        assert x["authority"].startswith("localhost:") and x["method"] == "GET"
        assert x["request"]["headers_reliable"] and x["response"]["headers_reliable"]
    big = next(x for x in xs if x["path"].startswith("/big"))
    assert big["response"]["body"]["decoded_bytes"] == 1 << 20
    up = next(x for x in xs if x["method"] == "POST")
    assert up["request"]["body"]["decoded_bytes"] == 300_000
    assert json.loads(up["response"]["body"]["text"])["received"] == 300_000


def test_corrupt_and_truncated_segments_are_reported_and_skipped(tmp_path):
    src = next((FIXTURES / "segments" / "h1").glob("*.parquet"))
    good = tmp_path / "a-good.parquet"
    shutil.copy(src, good)
    data = src.read_bytes()
    (tmp_path / "b-truncated.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "c-garbage.parquet").write_bytes(b"PAR1" + b"\x00garbage" * 100 + b"PAR1")
    out = tmp_path / "out.jsonl"
    result = analyze(tmp_path, out)
    assert result.returncode == 0
    assert "skipped" in result.stderr and "b-truncated.parquet" in result.stderr
    assert "c-garbage.parquet" in result.stderr and "Traceback" not in result.stderr
    assert "1 of 3 segment file(s)" in result.stderr
    assert out.read_bytes() == (FIXTURES / "golden" / "h1.exchanges.jsonl").read_bytes()


def test_damaged_segments_never_raise(tmp_path):
    """A seeded campaign of damaged copies of a real segment (bits flipped, 4-byte fields made huge)
    through every piece that opens segment files: the reader, the --workers planner and the plaintext
    grouping. Each file is read, or reported; nothing raises. (Found by it: pq.ParquetFile raising
    UnicodeDecodeError on a column path that is not UTF-8, which ended the whole run.)"""
    import random

    from analyzer.parallel.partition import open_regular, plaintext_groups
    from analyzer.parallel.run import default_workers
    from analyzer.segments.reader import ReadReport, read_batches

    src = next((FIXTURES / "segments" / "sdk").glob("*.parquet")).read_bytes()
    rng = random.Random(2)  # its 90th mutant has the column path that is not UTF-8
    path = tmp_path / "damaged.parquet"
    outcomes = {"read": 0, "reported": 0}
    for _ in range(600):
        path.write_bytes(damage_file(rng, src))
        report = ReadReport()
        for _batch in read_batches([path], report):
            pass
        outcomes["reported" if report.problems else "read"] += 1
        assert default_workers([path]) >= 1
        plaintext_groups([open_regular(path)])
    assert outcomes["read"] and outcomes["reported"], outcomes
