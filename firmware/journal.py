"""The journal: where a change to a recording is written, with what reports it, in one place.

Theory of operation
-------------------
A change to a recording lands in three places that must agree: its files in
the spool, its row in the catalog, and the deliveries that report it (outbox
rows: the CloudEvent over MQTT, status callbacks, an upload). The catalog row
and the outbox rows are written in one SQLite transaction, so a crash can lose
neither the change nor its report, and cannot report a change that did not
happen; files are written before a row points to them and removed after a row
stops pointing to them, so a row never names a file that is not there.

``Journal.record(events)`` takes the core's events as the audio loop gets
them: a start opens a part file and inserts the row with its
``recording.started``; pause and resume update it; an end marks the row
``processing``, finalises the file (trim, rate, encoding) and writes the final
fields with ``recording.finished`` (or ``no_input``, ``error``). Each
recording's fields are also kept beside its audio (``.json``), so a catalog
lost to corruption is rebuilt from the spool (``daemon.recovery``). A catalog
that fails does not stop recording: the journal says so once and goes on.

``delete_recording`` is the one way a recording's media are deleted, whichever
front end asks (GPIO has no delete; MQTT, the HTTP API, the CLI) and retention:
the rule is ``lifecycle.delete_refusal``, the transaction is
``Catalog.soft_delete`` (status, cancelled uploads, audit row, outbox rows),
the files go after, and ``recording.deleted`` is published.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .catalog import Catalog, OutboxItem, rfc3339
from .cloudevents import CloudEvents
from .core import Finished, Key, Paused, Resumed, Started
from .core.lifecycle import EVENT_TYPES, Status, finished_event_type, stored_status
from .core.options import redact
from .media.partfile import write_atomic
from .spool import Reserve, Take, Takes, WriteFailed, delete_media

log = logging.getLogger("edge-recorder.journal")

#: A catalog row's fields that are the box's own business, not the recording's.
HIDDEN_FIELDS = frozenset({"options", "path", "start_monotonic", "boot_id", "deleted_at"})

Envelope = Callable[[str, dict[str, Any]], dict[str, Any]]
Routes = Callable[[dict[str, Any], dict[str, Any] | None], list[OutboxItem]]


def public(row: dict[str, Any], media_url: str | None = None, uploads: list[dict[str, Any]] | None = None) -> dict:
    """A catalog row as a recording's fields (docs/mqtt.md); ``media_url`` a signed link when the API serves one."""
    out = {k: v for k, v in row.items() if k not in HIDDEN_FIELDS}
    if media_url is None and row.get("path"):
        media_url = Path(row["path"]).absolute().as_uri()  # no API: where the file is on the box
    out["media_url"] = media_url
    shown = uploads if uploads is not None else out.get("uploads", [])
    out["uploads"] = [
        {**u, "destination": redact(u.get("destination")), "location": redact(u.get("location"))} for u in shown
    ]
    return out


def delete_recording(
    catalog: Catalog,
    recording_id: str,
    *,
    actor: str,
    envelope: Envelope,
    public: Callable[[dict[str, Any]], dict[str, Any]],
    routes: Routes,
    force: bool = False,
    reason: str | None = None,
    deleted_at: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Delete a finished recording's media; its metadata stay 40 days with status ``deleted``.

    Refused (``ControlError``) while its upload is not confirmed, unless ``force``:
    then the upload is cancelled and the event says so (``cancelled_uploads``).
    ``LookupError`` when there is no such recording. Returns the row as it is now
    and the ``recording.deleted`` event (already in the outbox).
    """
    made: list[dict[str, Any]] = []

    def announce(row: dict[str, Any], cancelled: list[tuple[str, str]]) -> list[OutboxItem]:
        data = public(row)
        data["cancelled_uploads"] = [{"destination": redact(dest), "state": state} for dest, state in cancelled]
        if reason:
            data["reason"] = reason
        event = envelope(EVENT_TYPES["deleted"], data)
        made.append(event)
        return routes(event, row)

    before, _ = catalog.soft_delete(
        recording_id, force=force, actor=actor, announce=announce, detail=reason, deleted_at=deleted_at
    )
    delete_media(before.get("path"), recording_id)
    return catalog.get(recording_id) or before, made[0]


#: The fields an end writes into a recording's row.
_END_FIELDS = (
    "status",
    "state",
    "end_reason",
    "key",
    "end_time",
    "duration",
    "size",
    "sha256",
    "error_code",
    "error_message",
)


class Journal:
    """Core events in; spool files, catalog rows, CloudEvents and their deliveries out.

    ``routes(event, row)`` gives the outbox rows for an event (``delivery.routes``);
    ``sinks`` are told every event as it happens (the log, ``--events``);
    ``on_change(event)`` after each one is written (the delivery workers wake);
    ``state()`` is the device state device events carry. ``problem`` is set when
    the catalog cannot be written (the LED's fast blink says so). Without
    ``takes`` (the CLI beside a box) it records no audio, but deletes, audits and
    reports as the box does.
    """

    def __init__(
        self,
        catalog: Catalog,
        takes: Takes | None,
        cloud: CloudEvents,
        *,
        routes: Routes,
        device_id: str,
        input_rate: int,
        row_extras: Callable[[Started], dict[str, Any]] = lambda event: {},
        position: Callable[[], int] = lambda: 0,
        audio_clock: bool = False,
        sinks: Iterable[Callable[[dict[str, Any]], None]] = (),
        on_change: Callable[[dict[str, Any]], None] = lambda event: None,
        state: Callable[[], dict[str, Any]] = dict,
        reserve: Reserve | None = None,
    ) -> None:
        self.catalog, self.takes, self.cloud = catalog, takes, cloud
        self.reserve = reserve  # given up when the card fills, so what ended can still be finished
        self.routes = routes
        self.device_id = device_id
        self.rate = input_rate
        self.row_extras = row_extras
        self.position = position
        self.audio_clock = audio_clock
        self.sinks = list(sinks)
        self.on_change = on_change
        self.state = state
        self.media_link: Callable[[dict[str, Any]], str | None] = lambda row: None
        self.problem: str | None = None
        self._sink_lock = threading.Lock()
        self._started: dict[str, dict[str, Any]] = {}  # fields at the start, should the catalog fail
        self._catalog_failed = False

    @property
    def spool_dir(self) -> Path:
        if self.takes is None:
            raise LookupError("no spool here: the media are on the box")
        return self.takes.directory

    # -- core events ---------------------------------------------------------------------
    def record(self, events: Iterable[object]) -> list[WriteFailed]:
        """Write what the core's events say; return the storage failures (their recordings must end)."""
        failed: list[WriteFailed] = []
        for event in events:
            if isinstance(event, Finished):
                self._processing(event)
            try:
                take = self.takes.handle(event)
            except WriteFailed as exc:
                failed.append(exc)
                take = None
            if isinstance(event, Started):
                self._on_started(event)
            elif isinstance(event, Finished) and take is not None:
                self._on_finished(take)
            elif isinstance(event, Paused | Resumed):
                row = self._started.get(event.recording.id)
                self.emit(self.cloud.of(event), row, update={"status": event.status.value, "state": event.state.value})
            elif isinstance(event, Key):
                self.emit(self.cloud.of(event))
        return failed

    def _on_started(self, event: Started) -> None:
        rec = event.recording
        data = self.cloud.recording_fields(rec, event.state.value, event.status.value)
        row = {**data, "options": rec.options.to_dict(), **self.row_extras(event)}
        self._sidecar(self.spool_dir / f".{rec.id}.part.json", {**row, "input_rate": self.rate})
        self._started[rec.id] = row
        self.emit(self.cloud.of(event), row, insert=row)
        log.info("started %s (%s, %s)", rec.id, rec.source, rec.options.channels.value)

    def _processing(self, done: Finished) -> None:
        """The recording has ended; its file is being made (trimmed, resampled, encoded)."""
        self._guarded("update", done.recording.id, status=Status.PROCESSING.value, state=done.state.value)

    def _on_finished(self, take: Take) -> None:
        done = take.finished
        rec = done.recording
        data = self.cloud.finished(take)["data"]
        data["status"] = stored_status(done.status, written=take.written is not None, failed=take.error is not None)
        if take.error:
            data.update(error_code="storage", error_message=take.error)
            if take.written is not None:  # what reached the card, not what the core counted
                rate = self.rate if take.encryption else rec.options.sample_rate
                data["duration"] = round(take.written.frames / rate, 4)
        row = {k: data.get(k) for k in _END_FIELDS}
        row["path"] = str(take.written.path) if take.written else None
        row["encryption"] = data["encryption"] = take.encryption
        started = self._started.pop(rec.id, None) or self._guarded("get", rec.id) or {}
        full = {**started, **{k: v for k, v in data.items() if k in started}, **row}
        event = self.cloud.envelope(finished_event_type(full.get("state")), done.at, self.public_row(full))
        self.emit(event, full, update=row)
        full = self._guarded("get", rec.id) or full
        if take.written is not None:
            self._sidecar(take.written.path.with_suffix(".json"), full)
        (self.spool_dir / f".{rec.id}.part.json").unlink(missing_ok=True)
        log.info(
            "finished %s: %s, %s, %.2f s%s",
            rec.id,
            full["status"],
            full["end_reason"],
            full["duration"] or 0,
            f" -> {full['path']}" if full["path"] else "",
        )

    # -- writing ----------------------------------------------------------------------------
    def emit(
        self,
        event: dict[str, Any] | None,
        row: dict[str, Any] | None = None,
        *,
        insert: dict[str, Any] | None = None,
        update: dict[str, Any] | None = None,
    ) -> None:
        """Record a change and the deliveries that report it in one transaction, then tell the sinks.

        ``insert`` adds the recording ``row``; ``update`` changes its fields; with
        neither, the event only goes to the outbox.
        """
        if event is None:
            return
        items = self.routes(event, row)
        if insert is not None:
            self._guarded("insert", insert, outbox=items)
        elif update is not None:
            self._guarded("update", row["id"] if row else event["data"]["id"], outbox=items, **update)
        elif items:
            self._guarded("enqueue", items)
        self.on_change(event)
        self.publish(event)

    def publish(self, event: dict[str, Any] | None) -> None:
        """Hand an event to the local sinks (log, stdout); the delivery workers call this too."""
        if event is None:
            return
        with self._sink_lock:
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception:
                    log.exception("event sink failed")

    def envelope_now(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """An event about something that happened now (not at an audio position).

        A simulated box fed faster than real time lives in audio time, so its
        events keep their order; a real one stamps the wall clock.
        """
        event = self.cloud.envelope(kind, self.position(), data)
        if not self.audio_clock:
            event["time"] = rfc3339(datetime.fromtimestamp(time.time(), UTC))
        return event

    def device_event(self, kind: str, code: str, message: str) -> None:
        data = {"device_id": self.device_id, "code": code, "message": message, "state": self.state()}
        self.emit(self.envelope_now(kind, data))

    def audit(self, action: str, actor: str, target: str | None = None, detail: str | None = None) -> None:
        self._guarded("audit", action, actor, target, detail)

    def public_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A catalog row as a recording's fields (docs/mqtt.md), with its uploads and a signed media link."""
        uploads = None
        if row.get("id"):
            with contextlib.suppress(sqlite3.Error):  # a failing catalog must not stop an event
                uploads = self.catalog.uploads(row["id"])
        return public(row, self.media_link(row), uploads)

    def delete(self, recording_id: str, *, force: bool = False, actor: str = "?") -> dict[str, Any]:
        """Soft delete (``delete_recording``): the media go, the metadata stay (status ``deleted``)."""
        row, event = delete_recording(
            self.catalog,
            recording_id,
            actor=actor,
            force=force,
            envelope=self.envelope_now,
            public=self.public_row,
            routes=self.routes,
        )
        self.on_change(event)
        self.publish(event)
        return row

    def announce_recovered(self, rows: Iterable[dict[str, Any]]) -> None:
        """Recordings finalised after a crash: their end, reported as any other."""
        for row in rows:
            self.emit(self.envelope_now(finished_event_type(row.get("state")), self.public_row(row)), row)

    # -- the catalog, guarded ------------------------------------------------------------------
    def _guarded(self, operation: str, *args: Any, **fields: Any) -> Any:
        """A catalog call that cannot stop the recording: on a database error, say so and go on.

        The spool's ``.json`` files keep every recording's fields, so the next
        start rebuilds what the catalog lost.
        """
        try:
            return getattr(self.catalog, operation)(*args, **fields)
        except sqlite3.Error as exc:
            if "full" in str(exc) and self.reserve is not None and self.reserve.release():
                return self._guarded(operation, *args, **fields)  # the card filled up: finish on the reserve
            if not self._catalog_failed:
                self._catalog_failed = True
                self.problem = f"catalog: {exc}"
                log.error("catalog %s failed (%s); recording goes on, the spool keeps the fields", operation, exc)
                self.device_event("device.error", "catalog", f"the catalog cannot be written: {exc}")
            return None

    def _sidecar(self, path: Path, row: dict[str, Any]) -> None:
        """A recording's fields beside its audio, to rebuild a lost catalog; the catalog itself does not need it."""
        try:
            write_atomic(path, json.dumps(row).encode())
        except OSError as exc:
            if exc.errno == errno.ENOSPC and self.reserve is not None and self.reserve.release():
                return self._sidecar(path, row)
            log.warning("%s not written (%s); the catalog still has the recording", path.name, exc.strerror)
