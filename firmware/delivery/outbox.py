"""The outbox: deliveries waiting to go out, kept in the catalog's SQLite.

Theory of operation
-------------------
The box never talks to the network from its audio loop. Whatever must reach a
central server (an event, a status callback, an upload) is written as an
outbox row *in the same transaction* as the catalog change it reports
(``Catalog.insert/update(..., outbox=...)``), so a crash can lose neither the
change nor its report, and cannot report a change that did not happen.

Workers take due rows in ``seq`` order and remove a row only once it is
delivered: an event on the broker's PUBACK, a callback on a 2xx, an upload on
the store's confirmation. A transient failure schedules the row again with
capped exponential backoff and jitter; a permanent one removes it and says why.
Rows survive restarts, so delivery resumes where it stopped, in the same order.
Each event has a unique CloudEvents ``id``: a receiver drops the duplicates an
at-least-once delivery can produce.

The outbox is bounded (``[events] outbox_max``). When it is full the oldest
*events* are dropped (never uploads) and the drop is logged and counted.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..catalog import Catalog
from ..destinations import redact
from .errors import RETRY_AFTER_MAX

log = logging.getLogger("edge-recorder.outbox")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0
#: No row is ever scheduled further ahead than this (backoff, or a server's Retry-After). A row due later
#: was scheduled by a clock that has since stepped back (a Pi has no real-time clock: it boots with a
#: guess until NTP steps it): it is due now, not in a year.
HORIZON = max(BACKOFF_MAX, RETRY_AFTER_MAX) + 60.0


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    kind: str
    recording_id: str | None
    target: str
    payload: dict[str, Any]
    attempts: int


def backoff(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds before the next try: doubling from 1 s, capped at 5 min, with jitter (50-100 %).

    >>> [round(backoff(n, lambda: 1.0)) for n in range(0, 11, 2)]
    [1, 4, 16, 64, 256, 300]
    """
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempts) * (0.5 + 0.5 * rng())


class Outbox:
    def __init__(self, catalog: Catalog, *, limit: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.catalog = catalog
        self.limit = limit
        self.clock = clock
        self.dropped = 0

    def due(self, kind: str, limit: int = 100) -> list[Entry]:
        """Rows of ``kind`` whose time has come, oldest first: those due by now, and those due beyond the
        ``HORIZON`` (the clock stepped back since they were scheduled)."""
        now = self.clock()
        rows = self.catalog.outbox_due(kind, now, limit, beyond=now + HORIZON)
        return [Entry(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def next_due(self, kind: str) -> float | None:
        """When the next row of ``kind`` is due (wall-clock seconds), None when there is none."""
        due = self.catalog.outbox_next_due(kind)
        now = self.clock()
        return now if due is not None and due > now + HORIZON else due

    def delivered(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        if seqs:
            self.catalog.outbox_remove(seqs)

    def retry(self, entry: Entry, error: str, at_least: float | None = None) -> float:
        """Schedule ``entry`` again after a transient failure, not before ``at_least`` seconds (a server's
        ``Retry-After``, capped); returns the delay."""
        delay = max(backoff(entry.attempts), min(at_least or 0.0, RETRY_AFTER_MAX))
        self.catalog.outbox_retry(entry.seq, self.clock() + delay, error)
        return delay

    def give_up(self, entry: Entry, error: str) -> None:
        log.error(
            "giving up %s to %s after %d attempt(s): %s", entry.kind, redact(entry.target), entry.attempts + 1, error
        )
        self.delivered([entry.seq])

    def depth(self, kind: str | None = None) -> int:
        return self.catalog.outbox_depth(kind)

    def trim(self) -> int:
        """Keep the outbox within its limit by dropping the oldest events; returns how many went."""
        excess = self.depth() - self.limit
        if excess <= 0:
            return 0
        dropped = self.catalog.outbox_drop_oldest_events(excess)
        if dropped:
            self.dropped += dropped
            log.error("outbox full (%d rows): dropped the %d oldest undelivered events", self.limit, dropped)
        return dropped
