"""Reassemble one connection-direction byte stream from chunks that may arrive in any order.

Chunks carry their stream offset; the assembler hands bytes on in offset order as soon as they are
contiguous, trims overlaps (a chunk seen twice, or two chunks covering the same bytes), and turns
every hole into an explicit `Gap` piece: from a gap row of the segments, or, at the end, from
missing bytes nobody reported. Pieces keep the capture time of the chunk they came from, so the
output does not depend on the order in which chunks arrived.

What waits beyond a hole is bounded (max_pending): over it, the holes before it are given up as
missing, as at the end of input, so a hole that never fills cannot hold a stream's bytes forever.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import NamedTuple


# Pieces are named tuples: one is made per captured write, and a frozen dataclass's __init__ (a
# setattr per field) cost several times a tuple's.
class Data(NamedTuple):
    offset: int
    data: bytes
    ts_ns: int  # wall-clock capture time of the chunk


class Gap(NamedTuple):
    offset: int
    length: int
    reason: str
    ts_ns: int


Piece = Data | Gap


@dataclass
class StreamAssembler:
    """Orders chunks of one direction of one connection; `push` returns the pieces now in order."""

    # The recorder counts offsets from the first byte it saw of a connection, so every stream
    # starts at 0; whether that was the connection's first byte is the `open` row's business.
    next_offset: int = 0
    # pending chunks beyond a hole: (offset, seq, piece), seq breaks ties deterministically
    _pending: list = field(default_factory=list)
    _seq: int = 0
    pending_bytes: int = 0  # data bytes waiting, plus PIECE_COST per waiting piece
    max_pending: int = 16 * 1024 * 1024

    def _push(self, piece: Piece) -> None:
        end = piece.offset + (len(piece.data) if isinstance(piece, Data) else piece.length)
        if end <= self.next_offset:
            return  # entirely old: a duplicate
        heapq.heappush(self._pending, (piece.offset, 0 if isinstance(piece, Data) else 1, self._seq, piece))
        self._seq += 1
        self.pending_bytes += _cost(piece)

    def push(self, piece: Piece) -> list[Piece]:
        if not self._pending and type(piece) is Data and piece.offset == self.next_offset and piece.data:
            self.next_offset += len(piece.data)  # in order, nothing waiting: what _drain would hand on
            return [piece]
        self._push(piece)
        # over the budget, the holes are not waited for any longer
        return self._drain(final=self.pending_bytes > self.max_pending)

    def finish(self) -> list[Piece]:
        """The end of input: whatever is still pending comes out, holes as gaps."""
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while self._pending:
            offset, _, _, piece = self._pending[0]
            if offset > self.next_offset:
                if not final:
                    break
                out.append(Gap(self.next_offset, offset - self.next_offset, "missing", piece.ts_ns))
                self.next_offset = offset
                continue
            heapq.heappop(self._pending)
            self.pending_bytes -= _cost(piece)
            if isinstance(piece, Data):
                skip = self.next_offset - offset
                if skip >= len(piece.data):
                    continue
                data = piece.data[skip:] if skip else piece.data
                out.append(Data(self.next_offset, data, piece.ts_ns))
                self.next_offset += len(data)
            else:
                end = piece.offset + piece.length
                if end <= self.next_offset:
                    continue
                out.append(Gap(self.next_offset, end - self.next_offset, piece.reason, piece.ts_ns))
                self.next_offset = end
        return out


PIECE_COST = 64  # what a waiting piece costs the budget besides its bytes (a flood of tiny rows)


def _cost(piece: Piece) -> int:
    return PIECE_COST + (len(piece.data) if isinstance(piece, Data) else 0)
