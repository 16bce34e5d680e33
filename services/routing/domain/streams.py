"""The board's order across streams (partitions): how far each has been read, the watermark, and
the events held until it passes them (the package docstring, "Time")."""

from __future__ import annotations

import heapq
from collections import deque
from datetime import datetime

from pydantic import BaseModel

from services.routing.domain.clock import board_time
from services.routing.domain.records import Held


class Streams:
    """The marks, watermark and held events of a board (``Board`` is one)."""

    def __init__(self) -> None:
        self.marks: dict[str, datetime] = {}  # stream (partition) -> the latest event time read from it
        self.streams: frozenset[str] = frozenset()  # every stream there is (the topic's partitions), if known
        self.held: dict[str, deque[Held]] = {}  # stream -> events read, not applied yet, in read order
        self._watermark: datetime | None = None  # the least mark, kept while no mark moves (see watermark)
        self._watermark_stale = True

    def observe(self, stream: str, at: datetime) -> bool:
        """``stream`` (a partition) has been read up to an event at ``at``; returns whether its mark
        moved. Idempotent: a record read twice moves nothing. A heartbeat's copies on the other
        partitions are duplicates of one event, applied once, but each moves its stream's mark."""
        mark = self.marks.get(stream)
        if mark is None or at > mark:
            self.marks[stream] = board_time(at)
            self._watermark_stale = True
            return True
        return False

    def expect(self, streams: frozenset[str]) -> None:
        """Every stream there is: until each has been read, there is no watermark (a stream never read
        may hold anything)."""
        if streams != self.streams:
            self.streams = streams
            self._watermark_stale = True

    @property
    def watermark(self) -> datetime | None:
        """The least of the streams' marks: every stream has been read past it. None before every
        expected stream has been read. Worked out again only after a mark moved (``observe``): the board
        asks for it before every event it applies."""
        if self._watermark_stale:
            marks = self.marks
            complete = marks and all(stream in marks for stream in self.streams)
            self._watermark = min(marks.values()) if complete else None
            self._watermark_stale = False
        return self._watermark

    def hold(self, stream: str, ident: tuple[str, str], kind: str, at: datetime, data: BaseModel) -> None:
        """Keep an event read from ``stream`` until the watermark passes its time (``release``)."""
        self.held.setdefault(stream, deque()).append(Held(board_time(at), kind, data, ident))

    def release(self, *, everything: bool = False) -> list[Held]:
        """The held events the watermark has passed (or all of them), to apply in this order: merged
        across streams by event time, each stream's read order kept (an event behind a later one of
        its own stream waits for it)."""
        limit = self.watermark
        heads = [(q[0].at, stream) for stream, q in self.held.items() if q]
        heapq.heapify(heads)
        out: list[Held] = []
        while heads and (everything or (limit is not None and heads[0][0] <= limit)):
            _, stream = heapq.heappop(heads)
            q = self.held[stream]
            out.append(q.popleft())
            if q:
                heapq.heappush(heads, (q[0].at, stream))
            else:
                del self.held[stream]
        return out

