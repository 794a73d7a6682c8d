"""The whole analysis (tracker, HTTP/1 and HTTP/2, bodies, AI formats, events, every content mode) on
hostile input: no exception escapes, no input hangs. Two sources: a committed corpus of inputs that once
crashed or hung the analyzer (tests/fixtures/hostile/, made by tests/helpers/hostile_inputs.py), and
fresh inputs from the same generator under hypothesis. The long campaign is bench/fuzz_campaign.py."""

from __future__ import annotations

import random
import signal
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.hostile_inputs import connection_rows, run_analysis

CORPUS = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "hostile").glob("*.parquet"))
# An input taking this long is a hang: the slowest corpus input takes well under a second.
HANG_SECONDS = 20


class Hang(Exception):
    pass


@contextmanager
def no_hang():
    def alarm(*_):
        raise Hang(f"no result after {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_corpus_is_there():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_input_is_analyzed(path):
    rows = pq.read_table(path).to_pylist()
    errors: list[int] = []
    with no_hang():
        run_analysis(rows, parse_errors=errors)
    assert sum(errors) == 0  # the boundaries are a safety net: no parser should need them


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_generated_input_is_analyzed(seed):
    rows = connection_rows(random.Random(seed))
    errors: list[int] = []
    with no_hang():
        run_analysis(rows, ("full",), errors)
    assert sum(errors) == 0
