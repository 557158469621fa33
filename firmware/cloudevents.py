"""The core's events as CloudEvents 1.0 structured JSON (docs/mqtt.md, ``<prefix>/<device_id>/events``).

The core counts samples; a ``Timebase`` maps sample positions to wall-clock
time for ``time``, ``start_time`` and ``end_time``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .catalog import rfc3339
from .core import Key, Paused, Recording, Resumed, Started
from .core.lifecycle import EVENT_TYPES, finished_event_type

SPECVERSION = "1.0"


@dataclass(frozen=True, slots=True)
class Timebase:
    """Wall-clock time of input sample 0, and the input sample rate."""

    origin: datetime
    sample_rate: int

    def at(self, sample: int) -> datetime:
        return self.origin + timedelta(seconds=sample / self.sample_rate)


class CloudEvents:
    def __init__(self, device_id: str, timebase: Timebase) -> None:
        self.source = f"edge-recorder/{device_id}"
        self.timebase = timebase

    def envelope(self, kind: str, sample: int, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "specversion": SPECVERSION,
            "id": str(uuid.uuid4()),
            "source": self.source,
            "type": kind,
            "time": rfc3339(self.timebase.at(sample)),
            "datacontenttype": "application/json",
            "data": data,
        }

    def recording_fields(self, rec: Recording, state: str, status: str) -> dict[str, Any]:
        o = rec.options
        return {
            "id": rec.id,
            "name": rec.name,
            "call_id": rec.call_id,
            "source": rec.source,
            "state": state,
            "status": status,
            "format": o.format.value,
            "sample_rate": o.sample_rate,
            "channels": o.channel_count,
            "track": o.track.value,
            "start_time": rfc3339(self.timebase.at(rec.first)),
        }

    def of(self, event) -> dict[str, Any] | None:
        """The CloudEvent for a core event, or None for events that are not published."""
        if isinstance(event, Started | Paused | Resumed):
            data = self.recording_fields(event.recording, event.state.value, event.status.value)
            if isinstance(event, Started):
                data["pre_roll"] = event.pre_roll / self.timebase.sample_rate
                kind = EVENT_TYPES["started"]
            elif isinstance(event, Paused):
                data["pause_behavior"] = event.behavior.value
                kind = EVENT_TYPES["paused"]
            else:
                kind = EVENT_TYPES["resumed"]
            return self.envelope(kind, event.at, data)
        if isinstance(event, Key):
            rate = self.timebase.sample_rate
            data = {"key": event.key, "track": event.track, "start": event.start / rate, "end": event.end / rate}
            return self.envelope("dtmf.key", event.start, data)
        return None

    def finished(self, take) -> dict[str, Any]:
        """The CloudEvent for a recording's end: ``take`` is a ``spool.Take`` (the end and the file written)."""
        done = take.finished
        data = self.recording_fields(done.recording, done.state.value, done.status.value)
        data.update(
            end_reason=done.end_reason.value,
            end_time=rfc3339(self.timebase.at(done.at)),
            duration=round(done.duration, 4),
            size=take.written.size if take.written else 0,
            sha256=take.written.sha256 if take.written else None,
            media_url=take.written.path.resolve().as_uri() if take.written else None,
        )
        if done.key:
            data["key"] = done.key
        if done.discarded:
            data["error_message"] = done.discarded
        return self.envelope(finished_event_type(done.state), done.at, data)
