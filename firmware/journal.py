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

``delete_recording`` is the one way a recording's media are deleted, whichever
front end asks (GPIO has no delete; MQTT, the HTTP API, the CLI) and retention:
the rule is ``lifecycle.delete_refusal``, the transaction is
``Catalog.soft_delete`` (status, cancelled uploads, audit row, outbox rows),
the files go after, and ``recording.deleted`` is published.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .catalog import Catalog, OutboxItem
from .core.lifecycle import EVENT_TYPES
from .spool import delete_media

#: A catalog row's fields that are the box's own business, not the recording's (SPEC section 3).
HIDDEN_FIELDS = frozenset({"options", "path", "start_monotonic", "boot_id", "deleted_at"})

Envelope = Callable[[str, dict[str, Any]], dict[str, Any]]
Routes = Callable[[dict[str, Any], dict[str, Any] | None], list[OutboxItem]]


def public(row: dict[str, Any], media_url: str | None = None, uploads: list[dict[str, Any]] | None = None) -> dict:
    """A catalog row as the fields SPEC section 3 lists; ``media_url`` a signed link when the API serves one."""
    out = {k: v for k, v in row.items() if k not in HIDDEN_FIELDS}
    if media_url is None and row.get("path"):
        media_url = Path(row["path"]).absolute().as_uri()  # no API: where the file is on the box
    out["media_url"] = media_url
    out["uploads"] = uploads if uploads is not None else out.get("uploads", [])
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
        data["cancelled_uploads"] = [{"destination": dest, "state": state} for dest, state in cancelled]
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
