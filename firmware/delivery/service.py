"""Delivery as the daemon runs it: what to queue for each event, and the workers that send it.

``Delivery.items(event, row)`` (``routes``) decides, for one CloudEvent, which
outbox rows go with it. The daemon writes those rows in the same catalog
transaction as the change the event reports.

Three threads then work the outbox: the MQTT link publishes events; a worker
sends status callbacks; another uploads files (HTTP, S3 or MQTT) and, once an
upload is confirmed, records the remote location and queues
``recording.available``. Retention runs beside them (``retention``). Nothing
here blocks the audio loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import config as cfg
from ..catalog import Catalog, OutboxItem
from ..destinations import redact
from . import retention
from .errors import DeliveryError
from .outbox import Entry, Outbox
from .routes import Routes

log = logging.getLogger("edge-recorder.delivery")

HOUSEKEEPING_SECONDS = 300.0
CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}


class Worker:
    """Takes due outbox rows of one kind and hands them to ``handler`` until stopped.

    ``handler`` returns on success and raises ``DeliveryError`` on failure:
    transient ones are retried with backoff, permanent ones given up (after
    ``on_permanent`` is told).
    """

    def __init__(
        self,
        kind: str,
        outbox: Outbox,
        handler: Callable[[Entry], None],
        *,
        on_permanent: Callable[[Entry, DeliveryError], None] | None = None,
        on_transient: Callable[[Entry, DeliveryError], None] | None = None,
    ) -> None:
        self.kind = kind
        self.outbox = outbox
        self.handler = handler
        self.on_permanent = on_permanent
        self.on_transient = on_transient
        self.busy = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"outbox-{kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in self.outbox.due(self.kind, limit=20):
                if self._stop.is_set():
                    return
                self._one(entry)
            due = self.outbox.next_due(self.kind)
            wait = 5.0 if due is None else max(0.0, min(5.0, due - self.outbox.clock()))
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    @property
    def idle(self) -> bool:
        """Nothing is being sent and nothing is due now."""
        return not self.busy and not self.outbox.due(self.kind, limit=1)

    def _one(self, entry: Entry) -> None:
        self.busy = True
        try:
            self._attempt(entry)
        finally:
            self.busy = False

    def _attempt(self, entry: Entry) -> None:
        try:
            self.handler(entry)
        except DeliveryError as exc:
            if exc.permanent:
                if self.on_permanent is not None:
                    self.on_permanent(entry, exc)
                self.outbox.give_up(entry, str(exc))
            else:
                if self.on_transient is not None:
                    self.on_transient(entry, exc)
                delay = self.outbox.retry(entry, str(exc), at_least=exc.retry_after)
                log.warning("%s to %s failed (%s); retrying in %.0f s", self.kind, redact(entry.target), exc, delay)
            return
        except Exception as exc:  # a bug in a handler must not stop delivery of everything else
            log.exception("%s to %s failed", self.kind, redact(entry.target))
            self.outbox.retry(entry, f"internal error: {exc}")
            return
        self.outbox.delivered([entry.seq])


class Delivery:
    """Everything that leaves the box, for one daemon."""

    def __init__(
        self,
        config: cfg.Config,
        catalog: Catalog,
        *,
        device_id: str,
        envelope: Callable[[str, dict[str, Any]], dict[str, Any]],
        public: Callable[[dict[str, Any]], dict[str, Any]],
        snapshot: Callable[[], dict[str, Any]],
        commands: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        clock_synced: Callable[[], bool] = lambda: False,
        free_bytes: Callable[[], int] | None = None,
        notify: Callable[[dict[str, Any]], None] | None = None,
        links: Callable[[dict[str, Any]], dict[str, str | None]] | None = None,
    ) -> None:
        self.config = config
        self.links = links or (lambda row: {})
        self.catalog = catalog
        self.device_id = device_id
        self.envelope = envelope
        self.public = public
        self.clock_synced = clock_synced
        self.free_bytes = free_bytes
        self.notify = notify or (lambda event: None)
        self.outbox = Outbox(catalog, limit=config.events["outbox_max"])
        self.routes = Routes(config, device_id)
        self.link = None
        self.files = None
        if config.mqtt["url"]:
            self.link = self._link(snapshot, commands)
        self.webhooks = Worker("webhook", self.outbox, self._send_webhook)
        self.uploads = Worker(
            "upload", self.outbox, self._upload, on_permanent=self._upload_failed, on_transient=self._upload_retry
        )
        self._stop = threading.Event()
        self._housekeeping = threading.Thread(target=self._keep_house, name="retention", daemon=True)
        self._retention_due = threading.Event()

    # -- set-up ------------------------------------------------------------------------------
    def _link(self, snapshot, commands):
        from .mqtt import BrokerSettings, Link

        m = self.config.mqtt
        settings = BrokerSettings.from_url(
            m["url"],
            username=m["username"],
            password=m["password"],
            ca_file=m["ca_file"],
            client_cert=m["client_cert"],
            client_key=m["client_key"],
            keepalive=m["keepalive"],
            session_expiry=m["session_expiry"],
        )
        extra = []
        link = Link(
            settings,
            self.device_id,
            m["prefix"],
            self.outbox,
            snapshot=snapshot,
            commands=commands,
            heartbeat=m["heartbeat"],
            max_command_bytes=m["max_command_bytes"],
            extra_subscriptions=extra,
            on_connected=self._connected,
            token_required=bool(m["command_token"]) or m["command_auth"] == "token",
            anonymous=m["command_auth"] == "token" and not m["command_token"],
        )
        # Always, not only when the config's destinations say "mqtt": a recording started over MQTT or the
        # API may ask for destination "mqtt" in its own start options.
        from .mqtt_files import FileSender

        self.files = FileSender(link.client, m["prefix"], self.device_id)
        extra += [(topic, self.files.on_message) for topic in self.files.topics()]
        return link

    def _connected(self, link) -> None:
        if self.config.mqtt["ha_discovery"]:
            from .homeassistant import publish_discovery

            publish_discovery(link, self.config.mqtt["ha_prefix"], self.config.mqtt["command_token"])
        self.uploads.wake()

    def start(self) -> None:
        if self.link is not None:
            self.link.start()
        self.webhooks.start()
        self.uploads.start()
        self._housekeeping.start()

    def stop(self, drain: float = 3.0) -> None:
        """Stop the workers; first give what is due up to ``drain`` seconds to go out.

        What does not make it stays in the outbox and goes after the next start.
        """
        deadline = time.monotonic() + drain

        def pending() -> bool:
            events = self.link is not None and self.link.connected.is_set() and self.outbox.depth("event") > 0
            return events or not self.webhooks.idle or not self.uploads.idle

        self.wake()
        while pending() and time.monotonic() < deadline:
            time.sleep(0.02)
            self.wake()
        self._stop.set()
        self._retention_due.set()
        self.webhooks.stop()
        self.uploads.stop()
        if self.link is not None:
            self.link.stop()
        self._housekeeping.join(timeout=5)

    def wake(self) -> None:
        if self.link is not None:
            self.link.wake()
        self.webhooks.wake()
        self.uploads.wake()

    def state_changed(self) -> None:
        if self.link is not None:
            self.link.publish_state()

    def status(self) -> dict[str, Any]:
        """For the state snapshot and the doctor."""
        return {
            "mqtt": "off" if self.link is None else ("connected" if self.link.connected.is_set() else "disconnected"),
            "mqtt_error": None if self.link is None else self.link.last_error,
            "outbox": self.outbox.depth(),
            "upload_backlog": self.outbox.depth("upload"),
            "events_dropped": self.outbox.dropped,
        }

    # -- what goes with an event ------------------------------------------------------------------
    def items(self, event: dict[str, Any], row: dict[str, Any] | None = None) -> list[OutboxItem]:
        return self.routes.items(event, row)

    # -- workers ----------------------------------------------------------------------------------
    def _send_webhook(self, entry: Entry) -> None:
        from .webhooks import Callback, deliver

        c = entry.payload["callback"]
        callback = Callback(c["url"], c["method"], c["format"], tuple(c["events"]))
        deliver(callback, self.fresh_links(entry), secret=self.config.events["signing_secret"])

    def fresh_links(self, entry: Entry) -> dict[str, Any]:
        """The entry's event with its media links signed now: a callback sent late, or retried for hours,
        carries links that are good for ``[http] media_link_seconds`` from when it is sent, not from when
        the event happened. A recording gone (deleted) keeps the links its event had."""
        event = entry.payload["event"]
        row = self.catalog.get(entry.recording_id) if entry.recording_id else None
        if row is None or row.get("status") == "deleted":
            return event
        fresh = {key: value for key, value in self.links(row).items() if value}
        if not fresh:
            return event
        return event | {"data": (event.get("data") or {}) | fresh}

    def _upload(self, entry: Entry) -> None:
        p = entry.payload
        path = Path(p["path"])
        row = self.catalog.get(entry.recording_id) if entry.recording_id else None
        if row is not None and row["status"] == "deleted":  # deleted with force: its upload was cancelled
            log.info(
                "upload of %s to %s cancelled: the recording was deleted", entry.recording_id, redact(entry.target)
            )
            return
        if not path.exists():
            raise DeliveryError(f"{path}: the media file is gone", permanent=True)
        try:  # the config in force decides whose credentials go where, not the row
            target = self.config.upload_destinations().target(p.get("destination"), entry.target)
        except LookupError as exc:
            raise DeliveryError(str(exc), permanent=True) from None
        self._set_upload(entry, "uploading")
        if target.url == "mqtt":
            if self.files is None or self.link is None or not self.link.connected.is_set():
                raise DeliveryError("the broker is not connected", permanent=False)
            location = self.files.send(
                path,
                p["name"],
                p["sha256"],
                recording_id=entry.recording_id,
                timeout=max(60.0, self.config.upload["timeout"]),
            )
        else:
            from .uploads import upload

            location = upload(
                path,
                target.url,
                p["name"],
                sha256=p["sha256"],
                content_type=CONTENT_TYPES.get(p["format"], "application/octet-stream"),
                credentials=target.destination.credentials,
                method=target.destination.method.upper(),
                timeout=self.config.upload["timeout"],
                labels=p.get("labels"),
            )
        self._uploaded(entry, location)

    def _set_upload(self, entry: Entry, state: str, **fields: Any) -> None:
        self.catalog.set_upload(
            entry.recording_id,
            entry.target,
            state,
            entry.attempts + (state != "uploading"),
            fields.get("last_error"),
            fields.get("location"),
            clock_synced=state == "done" and self.clock_synced(),
        )

    def _uploaded(self, entry: Entry, location: str) -> None:
        self._set_upload(entry, "done", location=location)
        row = self.catalog.get(entry.recording_id) or {}
        data = self.public(row) | {"location": redact(location), "destination": redact(entry.target)}
        event = self.envelope("recording.available", data)
        self.catalog.update(entry.recording_id, outbox=self.items(event, None) + self.routes.callbacks(event, row))
        self.notify(event)
        log.info("uploaded %s to %s", entry.recording_id, location)
        self.wake()

    def _upload_retry(self, entry: Entry, exc: DeliveryError) -> None:
        self._set_upload(entry, "pending", last_error=str(exc))

    def _upload_failed(self, entry: Entry, exc: DeliveryError) -> None:
        self._set_upload(entry, "failed", last_error=str(exc))
        data = {
            "device_id": self.device_id,
            "code": "upload_failed",
            "recording_id": entry.recording_id,
            "destination": redact(entry.target),
            "message": f"upload of {entry.recording_id} failed for good: {exc}",
        }
        event = self.envelope("device.error", data)
        self.catalog.update(
            entry.recording_id,
            outbox=self.items(event, None),
            error_code="upload_failed",
            error_message=str(exc),
        )
        self.notify(event)
        self.wake()

    # -- retention ----------------------------------------------------------------------------------
    def retention_now(self) -> None:
        self._retention_due.set()

    def _keep_house(self) -> None:
        while not self._stop.is_set():
            try:
                self.outbox.trim()
                retention.run(self, time.time())
            except Exception:
                log.exception("retention failed")
            self._retention_due.wait(HOUSEKEEPING_SECONDS)
            self._retention_due.clear()
