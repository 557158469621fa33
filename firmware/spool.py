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

With ``encrypt_to`` (an age recipient, ``media.encrypted``) a recording is
encrypted as it is written instead: its part is ``.<id>.part.era``, the open
segment (at most the smaller of the sync interval and ``encrypted.SEGMENT_SECONDS``,
0.5 s; a recording's first audio is sealed at once) lives only in memory, and on the
end the part is published as ``<name>.era`` as it is. The box cannot decrypt
it, so it cannot trim, resample or encode it either: the finishing the
recording asked for (format, rate, trim span) is sealed inside the file and
applied on the central side (``edge-recorder decrypt``). After a crash the
encrypted part is published as it is, too: its complete segments are valid
and a torn last one is the decryptor's to report.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .core import Audio, Finished, RecordingOptions, Started, Status
from .media import encrypted
from .media.convert import CACHE_DIR
from .media.encrypted import EncryptedPart, EncryptionInfo
from .media.finalize import finalize
from .media.partfile import HEADER, PartFile, WavShape, publish, read_header
from .media.writers import Written, file_sha256

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
PART_SUFFIX = ".part.wav"
ENCRYPTED_PART_SUFFIX = f".part{encrypted.SUFFIX}"


def safe_name(name: str) -> str:
    """A file name from a recording name: no path separators, no leading dots."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".")
    return cleaned[:120] or "recording"


def part_path(directory: Path, recording_id: str, encrypted: bool = False) -> Path:
    return Path(directory) / f".{recording_id}{ENCRYPTED_PART_SUFFIX if encrypted else PART_SUFFIX}"


def is_encrypted(path: Path) -> bool:
    """A part or finished file of an encrypted recording (by its name)."""
    return Path(path).name.endswith(encrypted.SUFFIX)


def delete_media(path: str | Path | None, recording_id: str | None = None) -> None:
    """Remove a finished recording's media, its ``.json`` beside it and the converted copies the API made
    of it (``CACHE_DIR``); the metadata stay in the catalog."""
    if not path:
        return
    media = Path(path)
    media.unlink(missing_ok=True)
    media.with_suffix(".json").unlink(missing_ok=True)
    cache = media.parent / CACHE_DIR
    if recording_id and cache.is_dir():
        for copy in cache.glob(f"{recording_id}-*"):
            copy.unlink(missing_ok=True)


def parts(directory: Path) -> Iterator[tuple[str, Path]]:
    """(recording id, path) of every part file in ``directory``, plain or encrypted."""
    found = [
        (path.name[1 : -len(suffix)], path)
        for suffix in (PART_SUFFIX, ENCRYPTED_PART_SUFFIX)
        for path in Path(directory).glob(f".*{suffix}")
    ]
    yield from sorted(found, key=lambda item: item[1])


@dataclass(frozen=True, slots=True)
class Take:
    """A finished recording and its file (``written`` is None when absent).

    ``error`` says why a recording was cut short by storage (it is then
    finalised up to the last good sample). ``encryption`` describes the file
    of an encrypted recording (``media.encrypted.describe``).
    """

    finished: Finished
    written: Written | None
    error: str | None = None
    encryption: EncryptionInfo | None = None


#: Held on the card so that a full card can still finish what it holds: the catalog's last commits and
#: the sidecars of the recordings that ended because the card filled up.
RESERVE_BYTES = 512 * 1024


class Reserve:
    """A file of ``RESERVE_BYTES`` the box keeps in its spool and gives up when the card is full.

    When a write fails for want of space, ``release()`` frees it, so the recording that hit the wall
    can still be finished in the catalog (which needs a few pages for its commit) instead of being
    left in progress; ``hold()`` takes it again once there is room.

    >>> import tempfile
    >>> r = Reserve(Path(tempfile.mkdtemp()))
    >>> r.hold(), r.held, r.release(), r.held, r.release()
    (True, True, True, False, False)
    """

    NAME = ".reserve"

    def __init__(self, directory: Path, size: int = RESERVE_BYTES) -> None:
        self.path = Path(directory) / self.NAME
        self.size = size

    @property
    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def hold(self) -> bool:
        """Take the reserve (allocated, not sparse) if it is not held; False when there is no room for it."""
        if self.held:
            return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            self.path.unlink(missing_ok=True)
            return False
        return True

    def release(self) -> bool:
        """Give the reserve back to the file system; True when there was one to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("the card is full: released the %d KiB reserve to finish what it holds", self.size // 1024)
        return True


class WriteFailed(Exception):
    """Storage refused a recording's audio; the recording must end."""

    def __init__(self, recording_id: str, reason: str) -> None:
        self.recording_id, self.reason = recording_id, reason
        super().__init__(f"{recording_id}: {reason}")


class Takes:
    """Part files for the active recordings, finished files for the ended ones.

    ``file_names`` is ``"name"`` (the recording's name, made unique) or ``"id"``.
    ``encrypt_to`` is an age recipient, or a file holding one: recordings are
    then encrypted as they are written (ValueError here when it is not valid).
    """

    def __init__(
        self,
        directory: Path,
        input_rate: int,
        *,
        file_names: str = "name",
        sync_seconds: float | None = None,
        encrypt_to: str | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()  # the catalog keeps paths that hold from any directory
        self.input_rate = input_rate
        self.file_names = file_names
        self.encrypt_to = encrypted.check_recipient(encrypt_to) if encrypt_to else None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sync_frames = round(sync_seconds * input_rate) if sync_seconds else None
        self._segment_seconds = min(sync_seconds or encrypted.SEGMENT_SECONDS, encrypted.SEGMENT_SECONDS)
        self._parts: dict[str, PartFile | EncryptedPart] = {}
        self._failed: dict[str, str] = {}

    @property
    def active(self) -> list[str]:
        return list(self._parts)

    def handle(self, event) -> Take | None:
        """Follow one core event. Raises ``WriteFailed`` once when a recording's audio cannot be stored."""
        if isinstance(event, Started):
            rec = event.recording
            try:
                self._parts[rec.id] = self._open_part(rec)
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

    def _open_part(self, rec) -> PartFile | EncryptedPart:
        shape = WavShape(self.input_rate, rec.options.channel_count)
        if self.encrypt_to is None:
            return PartFile(part_path(self.directory, rec.id), shape)
        finish = {
            "format": rec.options.format.value,
            "sample_rate": rec.options.sample_rate,
            "mp3_bitrate": rec.options.mp3_bitrate,
        }
        return EncryptedPart(
            part_path(self.directory, rec.id, encrypted=True),
            shape,
            self.encrypt_to,
            rec.id,
            finish=finish,
            segment_seconds=self._segment_seconds,
        )

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
        trim = event.trim if error is None else None
        try:
            if isinstance(part, EncryptedPart):
                part.close(final=event.status is not Status.ABSENT, trim=trim)
            else:
                part.close()
        except OSError as exc:
            error = error or _reason(exc)
            trim = None
        if event.status is Status.ABSENT:
            part.path.unlink(missing_ok=True)
            return Take(event, None, error)
        stem = safe_name(rec.name if self.file_names == "name" else rec.id)
        written, problem = self.finish_part(part.path, stem, rec.options, trim)
        info = encrypted.describe(written.path) if is_encrypted(written.path) else None
        return Take(event, written, error or problem, info)

    def finish_part(
        self, part: Path, stem: str, options: RecordingOptions, trim: tuple[int, int] | None = None
    ) -> tuple[Written, str | None]:
        """Finalise a part into ``<stem>.<format>``; when that fails, keep the part as ``<stem>.wav``.

        An encrypted part becomes ``<stem>.era`` as it is (its finishing is done after decryption).
        """
        if is_encrypted(part):
            final = self.free_path(stem, encrypted.EXTENSION)
            publish(part, final)
            frames = encrypted.scan(final).frames
            return Written(final, frames, final.stat().st_size, file_sha256(final)), None
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
