"""Retention: media kept ``[retention] days`` after a confirmed upload, space made when it runs low.

Rules (the ``[retention]`` keys in docs/configuration.md; README, "Delivery: what
central servers see", Retention):

- completed recordings whose every upload is confirmed lose their media
  ``days`` after the last confirmation (status ``deleted``, metadata kept);
- metadata of deleted recordings go after ``deleted_metadata_days``;
- below ``low_space_mb`` of free space, uploaded media go first, oldest first;
- media not yet uploaded are never deleted here: when nothing can be freed the
  daemon's own space check stops recording and says so;
- nothing runs while the clock is not synchronised (a clock that jumped years
  ahead must not delete everything), and an upload confirmed while it was not
  counts its age from the first synchronised run after it (a Pi boots with a
  guess of the time: an upload stamped by a clock weeks behind is not weeks old).

``run(delivery, now)`` takes the time as an argument, so tests use a fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .. import config as cfg
from ..catalog import Catalog, OutboxItem, rfc3339
from ..core import ControlError
from ..journal import delete_recording

log = logging.getLogger("edge-recorder.retention")


class Delivery(Protocol):
    """What retention uses of the delivery service (``service.Delivery``)."""

    config: cfg.Config
    catalog: Catalog
    clock_synced: Callable[[], bool]
    free_bytes: Callable[[], int] | None
    envelope: Callable[[str, dict[str, Any]], dict[str, Any]]
    public: Callable[[dict[str, Any]], dict[str, Any]]

    def items(self, event: dict[str, Any], row: dict[str, Any] | None = None) -> list[OutboxItem]: ...


def run(delivery: Delivery, now: float) -> list[str]:
    """Apply the rules once; return the ids whose media were deleted."""
    if not delivery.clock_synced():
        log.debug("retention skipped: the clock is not synchronised")
        return []
    r = delivery.config.retention
    catalog = delivery.catalog
    moment = datetime.fromtimestamp(now, UTC)
    deleted: list[str] = []
    restamped = catalog.restamp_unsynced_uploads(rfc3339(moment))
    if restamped:
        log.info("%d upload(s) confirmed before the clock was synchronised count their age from now", restamped)
    uploaded = catalog.uploaded_media()
    if r["days"] > 0:
        cutoff = rfc3339(moment - timedelta(days=r["days"]))
        for row in uploaded:
            if row["uploaded"] < cutoff:
                _delete(delivery, row["id"], moment, f"{r['days']:g} days after its upload", deleted)
    if delivery.free_bytes is not None:
        floor = r["low_space_mb"] * 1_000_000
        for row in uploaded:
            if delivery.free_bytes() >= floor:
                break
            if row["id"] not in deleted:
                _delete(delivery, row["id"], moment, "storage is low; it was uploaded", deleted)
    cutoff = rfc3339(moment - timedelta(days=r["deleted_metadata_days"]))
    gone = catalog.forget_deleted(cutoff)
    if gone:
        log.info("forgot %d deleted recording(s) older than %g days", gone, r["deleted_metadata_days"])
    if r["days"] > 0:  # the audit log is kept as long as the recordings it speaks of can exist
        keep = rfc3339(moment - timedelta(days=r["days"] + r["deleted_metadata_days"]))
        catalog.trim_audit(keep)
    return deleted


def _delete(delivery: Delivery, rid: str, moment: datetime, why: str, deleted: list[str]) -> None:
    """Delete through the one delete rule: never media whose upload is not confirmed (not forced)."""
    try:
        delete_recording(
            delivery.catalog,
            rid,
            actor="retention",
            envelope=delivery.envelope,
            public=delivery.public,
            routes=lambda event, row: delivery.items(event, None),
            reason=why,
            deleted_at=rfc3339(moment),
        )
    except (ControlError, LookupError) as exc:  # it changed since it was listed: a new upload, a user's delete
        log.info("retention left %s: %s", rid, exc)
        return
    log.info("deleted the media of %s: %s", rid, why)
    deleted.append(rid)
