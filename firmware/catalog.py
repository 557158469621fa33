"""The catalog: every recording's fields in SQLite, surviving crashes.

SQLite in WAL mode with ``synchronous=FULL``: a committed change survives a
power cut. Writes take ``BEGIN IMMEDIATE`` so two writers never deadlock
half-way, and every connection waits ``BUSY_TIMEOUT`` for a lock instead of
failing. The schema version is SQLite's ``user_version``; ``MIGRATIONS`` holds
one script per version, applied in order in one transaction each.

``open_catalog`` checks the file first. A catalog that SQLite cannot read is
moved aside (``<name>.corrupt-<time>``) and a new one is created; the daemon
then rebuilds it from what the spool holds and keeps recording.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .core import ControlError, lifecycle

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 5.0

#: Fields of a recording (as docs/mqtt.md lists them) and what the box keeps beside them.
COLUMNS = (
    "id",
    "name",
    "call_id",
    "source",
    "status",
    "state",
    "end_reason",
    "key",
    "format",
    "sample_rate",
    "channels",
    "track",
    "options",
    "date_created",
    "date_updated",
    "start_time",
    "end_time",
    "duration",
    "size",
    "sha256",
    "path",
    "error_code",
    "error_message",
    "start_monotonic",
    "clock_synced",
    "boot_id",
    "deleted_at",
    "encryption",
)

MIGRATIONS: tuple[str, ...] = (
    # 1: recordings
    """
    CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        call_id TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL,
        state TEXT NOT NULL,
        end_reason TEXT,
        key TEXT,
        format TEXT NOT NULL,
        sample_rate INTEGER NOT NULL,
        channels INTEGER NOT NULL,
        track TEXT NOT NULL,
        options TEXT NOT NULL,
        date_created TEXT NOT NULL,
        date_updated TEXT NOT NULL,
        start_time TEXT NOT NULL,
        end_time TEXT,
        duration REAL,
        size INTEGER,
        sha256 TEXT,
        path TEXT,
        error_code TEXT,
        error_message TEXT,
        start_monotonic REAL,
        clock_synced INTEGER NOT NULL DEFAULT 0,
        boot_id TEXT,
        deleted_at TEXT
    );
    CREATE INDEX recordings_created ON recordings (date_created);
    CREATE INDEX recordings_call ON recordings (call_id);
    CREATE INDEX recordings_status ON recordings (status);
    """,
    # 2: the outbox (events, callbacks, uploads waiting to go out) and per-destination upload state
    """
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        recording_id TEXT,
        target TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        created TEXT NOT NULL
    );
    CREATE INDEX outbox_due ON outbox (kind, next_attempt, seq);
    CREATE TABLE uploads (
        recording_id TEXT NOT NULL,
        destination TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        location TEXT,
        date_updated TEXT NOT NULL,
        PRIMARY KEY (recording_id, destination)
    );
    """,
    # 3: take due rows in seq order without sorting the whole backlog each time
    """
    DROP INDEX outbox_due;
    CREATE INDEX outbox_kind_seq ON outbox (kind, seq);
    """,
    # 4: the audit log (downloads, deletes, config changes, failed logins)
    """
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        target TEXT,
        detail TEXT
    );
    CREATE INDEX audit_time ON audit (time);
    """,
    # 5: how a recording is encrypted at rest (JSON), when it is
    """
    ALTER TABLE recordings ADD COLUMN encryption TEXT;
    """,
    # 6: list by status newest first without reading every row of that status
    """
    CREATE INDEX recordings_status_created ON recordings (status, date_created);
    """,
    # 7: whether the clock was synchronised when an upload was confirmed (0: not; retention counts such an
    # upload's age from the first synchronised run after it). Uploads confirmed before keep the age they had.
    """
    ALTER TABLE uploads ADD COLUMN clock_synced INTEGER NOT NULL DEFAULT 0;
    UPDATE uploads SET clock_synced = 1 WHERE state = 'done';
    """,
)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """Something to deliver: ``kind`` is "event", "webhook" or "upload"; ``target`` says where."""

    kind: str
    target: str
    payload: dict[str, Any]
    recording_id: str | None = None


UNFINISHED = tuple(sorted(lifecycle.UNFINISHED))
#: Recordings whose every upload is confirmed, oldest confirmation first: what retention may delete.
_UPLOADED = (
    "SELECT r.id, r.path, MAX(u.date_updated) AS uploaded FROM recordings r JOIN uploads u ON u.recording_id = r.id "
    "WHERE r.status = 'completed' AND r.path IS NOT NULL GROUP BY r.id "
    "HAVING SUM(u.state != 'done') = 0 ORDER BY uploaded, r.date_created"
)


class CatalogError(Exception):
    """The catalog cannot be used; the message says why."""


class Catalog:
    """Recordings by id.

    >>> import tempfile, pathlib
    >>> cat = Catalog(pathlib.Path(tempfile.mkdtemp()) / "catalog.sqlite3")
    >>> cat.insert({"id": "RE1", "name": "RE1", "call_id": "CA1", "source": "cli", "status": "in-progress",
    ...             "state": "recording", "format": "wav", "sample_rate": 8000, "channels": 1, "track": "both",
    ...             "options": {}, "start_time": "2026-01-01T00:00:00Z"})
    >>> cat.update("RE1", status="completed", duration=1.5)
    >>> cat.get("RE1")["status"], cat.version
    ('completed', 7)
    >>> cat.close()
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            self._migrate()
        except sqlite3.DatabaseError:
            self._db.close()
            raise

    @property
    def version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        current = self.version
        if current > len(MIGRATIONS):
            raise CatalogError(
                f"{self.path}: schema version {current} is newer than this firmware knows ({len(MIGRATIONS)})"
            )
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.transaction() as db:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")
            (log.info if current else log.debug)("catalog %s: schema version %d", self.path, number)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed on success."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """A read of any table, for diagnostics and tests; the firmware reads through the methods below."""
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def integrity(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # -- rows -------------------------------------------------------------------------
    def insert(self, row: Mapping[str, Any], outbox: Iterable[OutboxItem] = ()) -> None:
        """Add a recording, and (in the same transaction) what must be delivered about it."""
        values = _encode({**row, "date_created": row.get("date_created") or now(), "date_updated": now()})
        names = [c for c in COLUMNS if c in values]
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO recordings ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [values[c] for c in names],
            )
            self._enqueue(db, outbox)

    def upsert(self, row: Mapping[str, Any]) -> None:
        """Insert ``row``, or replace the fields it has when the id is known (used when adopting files)."""
        with self._lock:
            if self.get(row["id"]) is None:
                self.insert(row)
            else:
                self.update(row["id"], **{k: v for k, v in row.items() if k != "id"})

    def update(self, recording_id: str, outbox: Iterable[OutboxItem] = (), **fields: Any) -> None:
        """Change a recording's fields, and (in the same transaction) queue what reports the change."""
        values = _encode({**fields, "date_updated": now()})
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise CatalogError(f"unknown catalog fields: {', '.join(sorted(unknown))}")
        with self.transaction() as db:
            db.execute(
                f"UPDATE recordings SET {', '.join(f'{c} = ?' for c in values)} WHERE id = ?",
                [*values.values(), recording_id],
            )
            self._enqueue(db, outbox)

    def enqueue(self, outbox: Iterable[OutboxItem]) -> None:
        """Queue deliveries that go with no change of a recording (a key, a device event)."""
        with self.transaction() as db:
            self._enqueue(db, outbox)

    @staticmethod
    def _enqueue(db: sqlite3.Connection, outbox: Iterable[OutboxItem]) -> None:
        for item in outbox:
            db.execute(
                "INSERT INTO outbox (kind, recording_id, target, payload, created) VALUES (?, ?, ?, ?, ?)",
                (item.kind, item.recording_id, item.target, json.dumps(item.payload, default=str), now()),
            )

    def get(self, recording_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM recordings WHERE id = ?", (recording_id,)).fetchone()
        return _decode(row) if row else None

    def list(
        self,
        *,
        status: str | None = None,
        call_id: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Recordings, newest first."""
        where, args = _filters(status, call_id, include_deleted)
        sql = "SELECT * FROM recordings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY date_created DESC, rowid DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            return [_decode(r) for r in self._db.execute(sql, args).fetchall()]

    def page(
        self,
        *,
        status: str | None = None,
        call_id: str | None = None,
        include_deleted: bool = False,
        created: list[tuple[str, str]] = (),
        size: int = 50,
        after: tuple[str, int] | None = None,
    ) -> tuple[list[dict[str, Any]], tuple[str, int] | None]:
        """One page of recordings, newest first, and the position after it (None on the last page).

        ``created`` holds (operator, RFC 3339 time) pairs on ``date_created``;
        ``after`` is the (date_created, rowid) the previous page ended at.
        """
        where, args = _filters(status, call_id, include_deleted)
        for op, moment in created:
            if op not in ("<", "<=", ">", ">="):
                raise CatalogError(f"unknown comparison {op!r}")
            where.append(f"date_created {op} ?")
            args.append(moment)
        if after is not None:
            where.append("(date_created, rowid) < (?, ?)")  # a row value: SQLite seeks straight there
            args += [after[0], after[1]]
        sql = "SELECT rowid AS _rowid, * FROM recordings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY date_created DESC, rowid DESC LIMIT {int(size) + 1}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        more = len(rows) > size
        rows = rows[:size]
        position = (rows[-1]["date_created"], rows[-1]["_rowid"]) if more and rows else None
        out = []
        for row in rows:
            decoded = _decode(row)
            decoded.pop("_rowid", None)
            out.append(decoded)
        return out, position

    def audit(self, action: str, actor: str, target: str | None = None, detail: str | None = None) -> None:
        """Note who downloaded, deleted or changed what, and failed logins."""
        with self.transaction() as db:
            self._audit(db, action, actor, target, detail)

    @staticmethod
    def _audit(db: sqlite3.Connection, action: str, actor: str, target: str | None, detail: str | None) -> None:
        db.execute(
            "INSERT INTO audit (time, action, actor, target, detail) VALUES (?, ?, ?, ?, ?)",
            (now(), action, actor, target, detail),
        )

    def trim_audit(self, before: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM audit WHERE time < ?", (before,))

    # -- deleting ------------------------------------------------------------------------
    def soft_delete(
        self,
        recording_id: str,
        *,
        force: bool,
        actor: str,
        announce: Callable[[dict[str, Any], list[tuple[str, str]]], Iterable[OutboxItem]],
        deleted_at: str | None = None,
        detail: str | None = None,
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Delete a recording's media as ``lifecycle.delete_refusal`` allows, in one transaction: its row
        becomes ``deleted`` (metadata kept), uploads not confirmed yet are cancelled (when ``force``), the
        audit log notes who, and ``announce(row, cancelled)`` gives the deliveries that report it.

        Returns the row as it was and the (destination, state) of the uploads cancelled. The caller removes
        the files after (``spool.delete_media``): a crash between leaves a file that reconcile removes,
        never a row that points to nothing. Raises ``LookupError`` or ``ControlError`` (refused).
        """
        with self.transaction() as db:
            found = db.execute("SELECT * FROM recordings WHERE id = ?", (recording_id,)).fetchone()
            if found is None:
                raise LookupError(f"no recording {recording_id!r}")
            row = _decode(found)
            pending = self._pending_uploads(db, recording_id)
            refusal = lifecycle.delete_refusal(recording_id, row["status"], pending, force)
            if refusal:
                raise ControlError(refusal)
            if pending:
                db.execute("DELETE FROM outbox WHERE kind = 'upload' AND recording_id = ?", (recording_id,))
                db.execute(
                    "UPDATE uploads SET state = 'cancelled', date_updated = ? WHERE recording_id = ? AND state != 'done'",
                    (now(), recording_id),
                )
            fields = lifecycle.deleted_fields(deleted_at or now())
            values = _encode({**fields, "date_updated": now()})
            db.execute(
                f"UPDATE recordings SET {', '.join(f'{c} = ?' for c in values)} WHERE id = ?",
                [*values.values(), recording_id],
            )
            cancelled = ", ".join(f"upload to {dest} ({state}) cancelled" for dest, state in pending)
            self._audit(db, "delete", actor, recording_id, "; ".join(x for x in (detail, cancelled) if x) or None)
            self._enqueue(db, announce({**row, **fields}, pending))
        return row, pending

    def forget_deleted(self, before: str) -> int:
        """Drop the metadata of recordings deleted before ``before``; returns how many."""
        with self.transaction() as db:
            gone = db.execute("SELECT id FROM recordings WHERE status = 'deleted' AND deleted_at < ?", (before,))
            ids = [rid for (rid,) in gone.fetchall()]
            for rid in ids:
                db.execute("DELETE FROM uploads WHERE recording_id = ?", (rid,))
                db.execute("DELETE FROM recordings WHERE id = ?", (rid,))
        return len(ids)

    def uploaded_media(self) -> list[dict[str, Any]]:
        """Completed recordings with media whose every upload is confirmed, oldest confirmation first
        (``id``, ``path``, ``uploaded``)."""
        with self._lock:
            return [dict(r) for r in self._db.execute(_UPLOADED).fetchall()]

    # -- uploads ---------------------------------------------------------------------------
    def uploads(self, recording_id: str) -> list[dict[str, Any]]:
        """Each destination's upload state of a recording."""
        with self._lock:
            rows = self._db.execute(
                "SELECT destination, state, attempts, last_error, location FROM uploads WHERE recording_id = ?",
                (recording_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def upload_states(self, recording_id: str) -> list[dict[str, Any]]:
        """Each destination's upload of a recording as a person asks after it: the fields of ``uploads`` with
        when it last changed (``date_updated``) and when it was confirmed (``date_confirmed``, once ``done``;
        confirmed while the clock was not synchronised: when it was, as retention counts it), and the uploads
        still waiting in the outbox for their first attempt (state ``queued``)."""
        with self._lock:
            rows = [
                dict(r)
                for r in self._db.execute(
                    "SELECT destination, state, attempts, last_error, location, date_updated, "
                    "CASE WHEN state = 'done' THEN date_updated END AS date_confirmed "
                    "FROM uploads WHERE recording_id = ? ORDER BY destination",
                    (recording_id,),
                )
            ]
            waiting = self._db.execute(
                "SELECT target, created FROM outbox WHERE kind = 'upload' AND recording_id = ? ORDER BY seq",
                (recording_id,),
            ).fetchall()
        known = {r["destination"] for r in rows}
        for destination, created in waiting:
            if destination not in known:
                known.add(destination)
                rows.append(
                    {
                        "destination": destination,
                        "state": "queued",
                        "attempts": 0,
                        "last_error": None,
                        "location": None,
                        "date_updated": created,
                        "date_confirmed": None,
                    }
                )
        return rows

    def ids_starting_with(self, prefix: str, limit: int) -> list[str]:
        """Ids of recordings (deleted ones too) that begin with ``prefix``, in order, at most ``limit``."""
        with self._lock:
            found = self._db.execute(  # a range on the primary key: no scan of the table
                "SELECT id FROM recordings WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                (prefix, prefix + "\U0010ffff", int(limit)),
            )
            return [rid for (rid,) in found.fetchall()]

    def pending_uploads(self, recording_id: str) -> list[tuple[str, str]]:
        """(destination, state) of a recording's uploads not confirmed yet: queued, pending, uploading, failed."""
        with self._lock:
            return self._pending_uploads(self._db, recording_id)

    @staticmethod
    def _pending_uploads(db: sqlite3.Connection, recording_id: str) -> list[tuple[str, str]]:
        states = {
            dest: state
            for dest, state in db.execute(
                "SELECT destination, state FROM uploads WHERE recording_id = ? AND state NOT IN ('done', 'cancelled')",
                (recording_id,),
            )
        }
        for (dest,) in db.execute(
            "SELECT target FROM outbox WHERE kind = 'upload' AND recording_id = ? ORDER BY seq", (recording_id,)
        ):
            states.setdefault(dest, "queued")
        return sorted(states.items())

    def set_upload(
        self,
        recording_id: str,
        destination: str,
        state: str,
        attempts: int,
        last_error: str | None = None,
        location: str | None = None,
        clock_synced: bool = False,
    ) -> None:
        """Note how a recording's upload to ``destination`` stands (a location, once known, stays), and
        whether the clock that stamps it was synchronised."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO uploads (recording_id, destination, state, attempts, last_error, location, date_updated, "
                "clock_synced) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (recording_id, destination) DO UPDATE SET "
                "state = excluded.state, attempts = excluded.attempts, last_error = excluded.last_error, "
                "location = COALESCE(excluded.location, uploads.location), date_updated = excluded.date_updated, "
                "clock_synced = excluded.clock_synced "
                "WHERE uploads.state != 'cancelled' OR excluded.state = 'done'",  # a late retry keeps it cancelled
                (recording_id, destination, state, attempts, last_error, location, now(), int(clock_synced)),
            )

    def restamp_unsynced_uploads(self, moment: str) -> int:
        """Confirmed uploads stamped by a clock that was not synchronised get ``moment`` (now, on a clock that
        is): the age retention counts starts no earlier than the box knew the time. Returns how many."""
        with self.transaction() as db:
            return db.execute(
                "UPDATE uploads SET date_updated = ?, clock_synced = 1 WHERE state = 'done' AND clock_synced = 0",
                (moment,),
            ).rowcount

    # -- the outbox ------------------------------------------------------------------------
    def outbox_due(
        self, kind: str, now: float, limit: int, beyond: float = math.inf
    ) -> list[tuple[int, str, str | None, str, str, int]]:
        """(seq, kind, recording_id, target, payload JSON, attempts) of rows due at ``now`` (or later than
        ``beyond``), oldest first."""
        with self._lock:
            return [
                tuple(r)
                for r in self._db.execute(
                    "SELECT seq, kind, recording_id, target, payload, attempts FROM outbox "
                    "WHERE kind = ? AND (next_attempt <= ? OR next_attempt > ?) ORDER BY seq LIMIT ?",
                    (kind, now, beyond, limit),
                ).fetchall()
            ]

    def outbox_next_due(self, kind: str) -> float | None:
        with self._lock:
            return self._db.execute("SELECT MIN(next_attempt) FROM outbox WHERE kind = ?", (kind,)).fetchone()[0]

    def outbox_remove(self, seqs: Iterable[int]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def outbox_retry(self, seq: int, next_attempt: float, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE seq = ?",
                (next_attempt, error[:500], seq),
            )

    def outbox_depth(self, kind: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM outbox", ()
        if kind:
            sql, args = sql + " WHERE kind = ?", (kind,)
        with self._lock:
            return self._db.execute(sql, args).fetchone()[0]

    def outbox_drop_oldest_events(self, count: int) -> int:
        """Drop the ``count`` oldest undelivered events (never uploads or callbacks); returns how many went."""
        with self.transaction() as db:
            cur = db.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE kind = 'event' ORDER BY seq LIMIT ?)",
                (count,),
            )
        return cur.rowcount

    # -- figures ---------------------------------------------------------------------------
    def count_by_status(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT status, COUNT(*) FROM recordings GROUP BY status").fetchall())

    def stored_bytes(self) -> int:
        """Bytes of media the catalog knows to be in the spool."""
        with self._lock:
            return self._db.execute("SELECT COALESCE(SUM(size), 0) FROM recordings WHERE path IS NOT NULL").fetchone()[
                0
            ]

    def unfinished(self) -> list[dict[str, Any]]:
        marks = ", ".join("?" * len(UNFINISHED))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM recordings WHERE status IN ({marks})", UNFINISHED).fetchall()
        return [_decode(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_catalog(path: Path) -> tuple[Catalog, Path | None]:
    """Open the catalog; a corrupt one is moved aside and replaced (its new path is returned)."""
    path = Path(path)
    try:
        catalog = Catalog(path)
        if catalog.integrity() == "ok":
            return catalog, None
        catalog.close()
    except sqlite3.DatabaseError as exc:
        log.error("catalog %s is unreadable (%s)", path, exc)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            src.replace(Path(str(aside) + suffix))
    log.error("catalog %s moved aside to %s; rebuilding it from the spool", path, aside)
    return Catalog(path), aside


def _filters(status: str | None, call_id: str | None, include_deleted: bool) -> tuple[list[str], list[Any]]:
    """WHERE terms and their arguments shared by ``list`` and ``page``."""
    where: list[str] = []
    args: list[Any] = []
    if status:
        where.append("status = ?")
        args.append(status)
    elif not include_deleted:
        where.append("status != 'deleted'")
    if call_id:
        where.append("call_id = ?")
        args.append(call_id)
    return where, args


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    return rfc3339(datetime.fromtimestamp(time.time(), UTC))  # time.time: the one wall clock the box reads


def _encode(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if key in ("options", "encryption") and value is not None and not isinstance(value, str):
            value = json.dumps(value, sort_keys=True)
        elif isinstance(value, bool):
            value = int(value)
        out[key] = value
    return out


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["options"] = json.loads(out["options"]) if out.get("options") else {}
    if out.get("encryption"):
        out["encryption"] = json.loads(out["encryption"])
    out["clock_synced"] = bool(out.get("clock_synced"))
    return out
