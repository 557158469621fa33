"""Where an event goes: the outbox rows that deliver it, decided from the config alone.

For one CloudEvent: the event itself for MQTT (when a broker is configured), a
status callback for each webhook that wants it (the recording's own
``status_callback``, in its ``status_callback_format``, and ``[events] webhook``,
in ``[events] callback_format``), and an upload when a recording has finished
with media and a destination. Nothing is sent here: whoever
changes the catalog writes these rows in the same transaction (the daemon, and
``edge-recorder recordings delete`` beside a running box), and the delivery
workers send them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .. import config as cfg
from ..catalog import OutboxItem
from ..core import OptionError

log = logging.getLogger("edge-recorder.delivery")


def upload_destination(config: cfg.Config, options: Mapping[str, Any] | None = None) -> str:
    """Where a finished recording is uploaded: its ``destination`` start option, else ``[upload] destination``.

    ``options`` are the recording's start options as the catalog keeps them;
    without them, the recordings the box starts itself (the record button, a
    DTMF key sequence, ``[call] auto_record``), which start with
    ``[recording]``'s. "" means nowhere: the file stays in the spool.

    >>> config = cfg.parse({"recording": {"destination": "archive"}, "upload": {"destination": "s3://x/"},
    ...                     "destinations": {"archive": {"url": "s3://calls/box-7/"}}})
    >>> upload_destination(config), upload_destination(config, {"destination": ""})
    ('archive', 's3://x/')
    """
    own = config.recording.destination if options is None else options.get("destination")
    return own or config.upload["destination"]


class Routes:
    """``items(event, row)``: the outbox rows for one event (``row``: the recording it is about, if any)."""

    def __init__(self, config: cfg.Config, device_id: str) -> None:
        self.config = config
        self.device_id = device_id

    def items(self, event: dict[str, Any], row: dict[str, Any] | None = None) -> list[OutboxItem]:
        rid = (row or {}).get("id") or event.get("data", {}).get("id")
        out: list[OutboxItem] = []
        if self.config.mqtt["url"]:
            out.append(OutboxItem("event", "mqtt", event, rid))
        if row is not None:
            out += self.callbacks(event, row)
            upload = self.upload_item(event, row)
            if upload is not None:
                out.append(upload)
        return out

    def callbacks(self, event: dict[str, Any], row: dict[str, Any]) -> list[OutboxItem]:
        """The recording's own status callback goes out in the format its start named (a vendor's document
        names its vendor's: its URL expects that); "" or none (a row from before the option) is the box's
        ``[events] callback_format``, which the device-wide ``[events] webhook`` always has."""
        from .webhooks import Callback, wanted

        e = self.config.events
        fmt = e["callback_format"]
        callbacks = []
        options = row.get("options") or {}
        if options.get("status_callback"):
            try:
                callbacks.append(
                    Callback.from_options(
                        options["status_callback"],
                        options.get("status_callback_method"),
                        options.get("status_callback_events"),
                        options.get("status_callback_format") or fmt,
                    )
                )
            except ValueError as exc:  # checked at start; a config-given one may still be wrong
                log.error("status_callback of %s not used: %s", row.get("id"), exc)
        if e["webhook"]:
            events = tuple(e["webhook_events"].replace(",", " ").split())
            try:
                callbacks.append(Callback(e["webhook"], e["webhook_method"].upper(), fmt, events))
            except ValueError as exc:  # config check refuses it; never let it stop a recording's event
                log.error("[events] webhook not used: %s", exc)
        return [
            OutboxItem(
                "webhook",
                cb.url,
                {"callback": cb.__dict__ | {"events": list(cb.events)}, "event": event},
                row.get("id"),
            )
            for cb in callbacks
            if wanted(cb, event)
        ]

    def upload_item(self, event: dict[str, Any], row: dict[str, Any]) -> OutboxItem | None:
        if event["type"] not in ("recording.finished", "recording.error") or not row.get("path"):
            return None
        destination = upload_destination(self.config, row.get("options") or {})
        if not destination:
            return None
        try:
            target = self.config.upload_destinations().resolve(destination)
        except OptionError as exc:  # checked at start; the config has changed since: the sender says so
            log.error("upload of %s: %s", row.get("id"), exc)
            which, url = None, destination
        else:
            if target is None:
                return None
            which, url = target.destination.name, target.url
        from .uploads import remote_name

        fields = {**row, "device_id": self.device_id}
        name = remote_name(self.config.upload["name_template"], fields)
        fmt = row["format"]
        if row.get("encryption"):  # sealed on the box: the central side decrypts it into <format>
            name, fmt = f"{name}.era", "era"
        labels = {"recording-id": row["id"], "call-id": row.get("call_id") or "", "device-id": self.device_id}
        payload = {
            "path": row["path"],
            "name": name,
            "sha256": row["sha256"],
            "format": fmt,
            "destination": which,
            "labels": labels,
        }
        return OutboxItem("upload", url, payload, row["id"])
