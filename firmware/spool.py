"""Recordings on local storage while they are made, and finished files.

``Takes`` follows the core's events: it opens a part file (16-bit WAV at the
input rate) when a recording starts, appends the core's audio to it, and on the
end finalises it into ``<name>.<format>`` (trim, rate, encoding). A recording
that ends ``absent`` leaves no file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .core import Audio, Finished, Started, Status
from .media.finalize import finalize
from .media.writers import WavWriter, Written

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file name from a recording name: no path separators, no leading dots."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".")
    return cleaned[:120] or "recording"


@dataclass(frozen=True, slots=True)
class Take:
    """A finished recording and its file (``written`` is None when absent)."""

    finished: Finished
    written: Written | None


class Takes:
    def __init__(self, directory: Path, input_rate: int) -> None:
        self.directory = Path(directory)
        self.input_rate = input_rate
        self.directory.mkdir(parents=True, exist_ok=True)
        self._parts: dict[str, WavWriter] = {}

    def handle(self, event) -> Take | None:
        if isinstance(event, Started):
            rec = event.recording
            part = self.directory / f".{rec.id}.part.wav"
            self._parts[rec.id] = WavWriter(part, self.input_rate, rec.options.channel_count)
        elif isinstance(event, Audio):
            self._parts[event.recording.id].write(event.frames)
        elif isinstance(event, Finished):
            return self._finish(event)
        return None

    def _finish(self, event: Finished) -> Take:
        rec = event.recording
        part = self._parts.pop(rec.id)
        part.close()
        if event.status is Status.ABSENT:
            part.path.unlink(missing_ok=True)
            return Take(event, None)
        o = rec.options
        final = self._free_path(safe_name(rec.name), o.format.value)
        written = finalize(part.path, final, o.format.value, o.sample_rate, event.trim, o.mp3_bitrate)
        return Take(event, written)

    def _free_path(self, stem: str, ext: str) -> Path:
        path = self.directory / f"{stem}.{ext}"
        n = 1
        while path.exists():
            n += 1
            path = self.directory / f"{stem}-{n}.{ext}"
        return path
