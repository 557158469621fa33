"""Retention: media kept ``[retention] days`` after a confirmed upload, space made when it runs low.

Rules (SPEC section 6):

- completed recordings whose every upload is confirmed lose their media
  ``days`` after the last confirmation (status ``deleted``, metadata kept);
- metadata of deleted recordings go after ``deleted_metadata_days``;
- below ``low_space_mb`` of free space, uploaded media go first, oldest first;
- media not yet uploaded are never deleted here: when nothing can be freed the
  daemon's own space check stops recording and says so;
- nothing runs while the clock is not synchronised (a clock that jumped years
  ahead must not delete everything).

``run(delivery, now)`` takes the time as an argument, so tests use a fake clock.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..cloudevents import rfc3339
from ..spool import delete_media

if TYPE_CHECKING:
    from .service import Delivery

log = logging.getLogger("edge-recorder.retention")

_UPLOADED = (
    "SELECT r.id, r.path, MAX(u.date_updated) AS uploaded FROM recordings r JOIN uploads u ON u.recording_id = r.id "
    "WHERE r.status = 'completed' AND r.path IS NOT NULL GROUP BY r.id "
    "HAVING SUM(u.state != 'done') = 0 ORDER BY uploaded, r.date_created"
)


def run(delivery: Delivery, now: float) -> list[str]:
    """Apply the rules once; return the ids whose media were deleted."""
    if not delivery.clock_synced():
        log.debug("retention skipped: the clock is not synchronised")
        return []
    r = delivery.config.retention
    catalog = delivery.catalog
    moment = datetime.fromtimestamp(now, UTC)
    deleted: list[str] = []
    uploaded = catalog.query(_UPLOADED)
    if r["days"] > 0:
        cutoff = rfc3339(moment - timedelta(days=r["days"]))
        for row in uploaded:
            if row["uploaded"] < cutoff:
                deleted.append(_delete(delivery, row["id"], moment, f"{r['days']:g} days after its upload"))
    if delivery.free_bytes is not None:
        floor = r["low_space_mb"] * 1_000_000
        for row in uploaded:
            if delivery.free_bytes() >= floor:
                break
            if row["id"] not in deleted:
                deleted.append(_delete(delivery, row["id"], moment, "storage is low; it was uploaded"))
    cutoff = rfc3339(moment - timedelta(days=r["deleted_metadata_days"]))
    with catalog.transaction() as db:
        gone = db.execute("SELECT id FROM recordings WHERE status = 'deleted' AND deleted_at < ?", (cutoff,)).fetchall()
        for (rid,) in gone:
            db.execute("DELETE FROM uploads WHERE recording_id = ?", (rid,))
            db.execute("DELETE FROM recordings WHERE id = ?", (rid,))
    if gone:
        log.info("forgot %d deleted recording(s) older than %g days", len(gone), r["deleted_metadata_days"])
    if r["days"] > 0:  # the audit log is kept as long as the recordings it speaks of can exist
        keep = rfc3339(moment - timedelta(days=r["days"] + r["deleted_metadata_days"]))
        with catalog.transaction() as db:
            db.execute("DELETE FROM audit WHERE time < ?", (keep,))
    return deleted


def _delete(delivery: Delivery, rid: str, moment: datetime, why: str) -> str:
    row: dict[str, Any] = delivery.catalog.get(rid) or {}
    delete_media(row.get("path"))
    fields = {"status": "deleted", "path": None, "deleted_at": rfc3339(moment)}
    event = delivery.envelope("recording.deleted", delivery.public({**row, **fields}) | {"reason": why})
    delivery.catalog.update(rid, outbox=delivery.items(event, None), **fields)
    log.info("deleted the media of %s: %s", rid, why)
    return rid
