"""Recordings on local storage while they are made, and finished files.

``Takes`` follows the core's events: it opens a part file (a crash-safe 16-bit
WAV at the input rate, ``media.partfile``) when a recording starts, appends the
core's audio to it, makes it durable every ``sync_seconds`` of audio, and on
the end finalises it into ``<name>.<format>`` (trim, rate, encoding). A
recording that ends ``absent`` leaves no file.

A write that fails (a full disk, the 2 GiB WAV limit) does not lose what was
already written: the recording is marked failed here, the caller ends it, and
it is finalised up to the last good sample. If the finished format cannot be
made (no room to encode an MP3), the part itself is kept as the WAV.

``parts(directory)`` finds the part files a crash left behind; the daemon
repairs and finalises them on the next start (``end_reason = recovered``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .core import Audio, Finished, RecordingOptions, Started, Status
from .media.finalize import finalize
from .media.partfile import HEADER, PartFile, WavShape, publish, read_header
from .media.writers import Written, file_sha256

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
PART_SUFFIX = ".part.wav"


def safe_name(name: str) -> str:
    """A file name from a recording name: no path separators, no leading dots."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".")
    return cleaned[:120] or "recording"


def part_path(directory: Path, recording_id: str) -> Path:
    return Path(directory) / f".{recording_id}{PART_SUFFIX}"


def delete_media(path: str | Path | None) -> None:
    """Remove a finished recording's media and its ``.json`` beside it (metadata stay in the catalog)."""
    if not path:
        return
    media = Path(path)
    media.unlink(missing_ok=True)
    media.with_suffix(".json").unlink(missing_ok=True)


def parts(directory: Path) -> Iterator[tuple[str, Path]]:
    """(recording id, path) of every part file in ``directory``."""
    for path in sorted(Path(directory).glob(f".*{PART_SUFFIX}")):
        yield path.name[1 : -len(PART_SUFFIX)], path


@dataclass(frozen=True, slots=True)
class Take:
    """A finished recording and its file (``written`` is None when absent).

    ``error`` says why a recording was cut short by storage (it is then
    finalised up to the last good sample).
    """

    finished: Finished
    written: Written | None
    error: str | None = None


class WriteFailed(Exception):
    """Storage refused a recording's audio; the recording must end."""

    def __init__(self, recording_id: str, reason: str) -> None:
        self.recording_id, self.reason = recording_id, reason
        super().__init__(f"{recording_id}: {reason}")


class Takes:
    """Part files for the active recordings, finished files for the ended ones.

    ``file_names`` is ``"name"`` (the recording's name, made unique) or ``"id"``.
    """

    def __init__(
        self,
        directory: Path,
        input_rate: int,
        *,
        file_names: str = "name",
        sync_seconds: float | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.input_rate = input_rate
        self.file_names = file_names
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sync_frames = round(sync_seconds * input_rate) if sync_seconds else None
        self._parts: dict[str, PartFile] = {}
        self._failed: dict[str, str] = {}

    @property
    def active(self) -> list[str]:
        return list(self._parts)

    def handle(self, event) -> Take | None:
        """Follow one core event. Raises ``WriteFailed`` once when a recording's audio cannot be stored."""
        if isinstance(event, Started):
            rec = event.recording
            try:
                self._parts[rec.id] = PartFile(
                    part_path(self.directory, rec.id), WavShape(self.input_rate, rec.options.channel_count)
                )
            except OSError as exc:
                self._failed[rec.id] = _reason(exc)
                raise WriteFailed(rec.id, self._failed[rec.id]) from exc
        elif isinstance(event, Audio):
            rid = event.recording.id
            part = self._parts.get(rid)
            if part is None or rid in self._failed:
                return None
            try:
                part.write(event.frames)
                if self._sync_frames and part.unsynced_frames >= self._sync_frames:
                    part.sync()
            except OSError as exc:
                self._failed[rid] = _reason(exc)
                raise WriteFailed(rid, self._failed[rid]) from exc
        elif isinstance(event, Finished):
            return self._finish(event)
        return None

    def sync(self) -> None:
        """Make every active part durable now."""
        for rid, part in self._parts.items():
            if rid not in self._failed and part.unsynced_frames:
                try:
                    part.sync()
                except OSError as exc:
                    self._failed[rid] = _reason(exc)

    def _finish(self, event: Finished) -> Take:
        rec = event.recording
        error = self._failed.pop(rec.id, None)
        part = self._parts.pop(rec.id, None)
        if part is None:  # the part file could not even be created
            return Take(event, None, error)
        try:
            part.close()
        except OSError as exc:
            error = error or _reason(exc)
        if event.status is Status.ABSENT:
            part.path.unlink(missing_ok=True)
            return Take(event, None, error)
        stem = safe_name(rec.name if self.file_names == "name" else rec.id)
        trim = event.trim if error is None else None
        written, problem = self.finish_part(part.path, stem, rec.options, trim)
        return Take(event, written, error or problem)

    def finish_part(
        self, part: Path, stem: str, options: RecordingOptions, trim: tuple[int, int] | None = None
    ) -> tuple[Written, str | None]:
        """Finalise a part into ``<stem>.<format>``; when that fails, keep the part as ``<stem>.wav``."""
        final = self.free_path(stem, options.format.value)
        try:
            return finalize(part, final, options.format.value, options.sample_rate, trim, options.mp3_bitrate), None
        except OSError as exc:
            fallback = self.free_path(stem, "wav")
            log.error("%s: cannot finalise as %s (%s); keeping the recorded WAV", part, final.name, _reason(exc))
            publish(part, fallback)
            with open(fallback, "rb") as fh:
                shape, data = read_header(fh.read(HEADER)) or (WavShape(self.input_rate, 1), 0)
            written = Written(fallback, data // shape.block, fallback.stat().st_size, file_sha256(fallback))
            return written, f"kept as WAV: could not write {options.format.value}: {_reason(exc)}"

    def free_path(self, stem: str, ext: str) -> Path:
        path = self.directory / f"{stem}.{ext}"
        n = 1
        while path.exists():
            n += 1
            path = self.directory / f"{stem}-{n}.{ext}"
        return path


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename or 'spool'})" if exc.filename else exc.strerror
    return str(exc)
