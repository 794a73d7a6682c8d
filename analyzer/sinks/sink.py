"""What every output of the analysis is to the pipeline (analyzer/pipeline.py): a sink it hands
each exchange, the events made of it, and each connection when it is done; closed at the end."""

from __future__ import annotations

import sys
from pathlib import Path

from analyzer.model import ConnectionInfo, Exchange


class Sink:
    """The sink protocol, each method doing nothing until a sink needs it."""

    wants_events = False  # True: the pipeline builds the events of each exchange for this sink

    def write_exchange(self, x: Exchange) -> None:
        """Every exchange, as its connection closes (or live mode hands it out)."""

    def write_events(self, x: Exchange, events: list[dict]) -> None:
        """The events of an exchange (often none: not every exchange is an AI call)."""

    def write_connection(self, info: ConnectionInfo) -> None:
        """A connection, once it is done."""

    def close(self) -> str:
        """Finish; a piece of the run's summary line, "" for none."""
        return ""


class LineFile(Sink):
    """A sink writing lines to a file, or to stdout for '-'."""

    def __init__(self, path: Path):
        self.file = sys.stdout if str(path) == "-" else open(path, "w", encoding="utf-8")

    def write_line(self, line: str) -> None:
        self.file.write(line + "\n")

    def close(self) -> str:
        if self.file is not sys.stdout:
            self.file.close()
        return ""
