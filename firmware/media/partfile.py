"""A WAV file that is valid, or repairable, at every moment it is being written.

Theory of operation
-------------------
A recording in progress is a plain 16-bit PCM WAV: a 44-byte header and the
samples after it. Every ``write`` goes straight to the kernel (no buffer in
this process), so ``kill -9`` loses nothing that was written. ``sync`` rewrites
the two size fields of the header for the data so far and then ``fsync``s, on a
cadence of about a second: a power cut loses at most what was written since.

After a crash the size fields may lag behind the file (the kill came between
syncs) or run ahead of it (the power cut dropped data written after them). The
file's length is the truth: ``repair`` sets the sizes from it, drops a torn
trailing frame, and leaves a file whose header already agrees alone, so a
healthy file is never changed and repairing twice changes nothing.

RIFF sizes are 32-bit, so a part file stops accepting audio before 2 GiB.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = 44
#: Largest data size that keeps every RIFF field below 2**31.
MAX_DATA_BYTES = (1 << 31) - 1 - HEADER


class PartFull(OSError):
    """The part file reached the WAV size limit."""


@dataclass(frozen=True, slots=True)
class WavShape:
    sample_rate: int
    channels: int

    @property
    def block(self) -> int:
        return 2 * self.channels


def header(shape: WavShape, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV holding ``data_bytes`` of samples."""
    rate, ch = shape.sample_rate, shape.channels
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, ch, rate, rate * shape.block, shape.block, 16),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


def read_header(data: bytes) -> tuple[WavShape, int] | None:
    """(shape, data size) from a header this module wrote, or None."""
    if len(data) < HEADER or data[:4] != b"RIFF" or data[8:16] != b"WAVEfmt " or data[36:40] != b"data":
        return None
    fmt_size, tag, ch, rate, _, block, bits = struct.unpack("<IHHIIHH", data[16:36])
    if fmt_size != 16 or tag != 1 or bits != 16 or ch not in (1, 2) or block != 2 * ch or rate <= 0:
        return None
    return WavShape(rate, ch), struct.unpack("<I", data[40:44])[0]


class PartFile:
    """Appends int16 frames to a WAV that survives ``kill -9`` and power loss.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> part = PartFile(path, WavShape(8000, 1))
    >>> part.write(np.zeros((80, 1), np.int16))
    >>> part.sync(); part.frames, path.stat().st_size
    (80, 204)
    >>> part.close()
    """

    def __init__(self, path: Path, shape: WavShape) -> None:
        self.path = Path(path)
        self.shape = shape
        self.frames = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(self._fd, header(shape, 0))
            os.fsync(self._fd)
        except OSError:
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        self._synced = 0

    @property
    def data_bytes(self) -> int:
        return self.frames * self.shape.block

    @property
    def unsynced_frames(self) -> int:
        return self.frames - self._synced

    def write(self, frames: np.ndarray) -> None:
        """Append frames (int16, shape (n, channels)). On ENOSPC the frames that fit are kept."""
        data = np.ascontiguousarray(frames, dtype="<i2").tobytes()
        if self.data_bytes + len(data) > MAX_DATA_BYTES:
            raise PartFull(f"{self.path}: WAV size limit (2 GiB) reached")
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        finally:
            whole = written - written % self.shape.block
            if whole != written:  # a torn frame at a full disk: keep whole frames only
                os.ftruncate(self._fd, HEADER + self.data_bytes + whole)
                os.lseek(self._fd, 0, os.SEEK_END)
            self.frames += whole // self.shape.block

    def sync(self) -> None:
        """Make everything written so far durable, header included."""
        os.pwrite(self._fd, struct.pack("<I", 36 + self.data_bytes), 4)
        os.pwrite(self._fd, struct.pack("<I", self.data_bytes), 40)
        os.fsync(self._fd)
        self._synced = self.frames

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1


def repair(path: Path) -> int | None:
    """Make the header of a part file agree with its length; return its frames.

    None when the file does not start with a header this module writes (it is
    then left untouched for a person to look at).
    """
    with open(path, "r+b") as fh:
        parsed = read_header(fh.read(HEADER))
        if parsed is None:
            return None
        shape, stated = parsed
        size = os.fstat(fh.fileno()).st_size
        data = min(size - HEADER, MAX_DATA_BYTES)
        data -= data % shape.block
        if stated == data and size == HEADER + data:
            return data // shape.block
        if size != HEADER + data:
            fh.truncate(HEADER + data)
        fh.seek(0)
        fh.write(header(shape, data))
        fh.flush()
        os.fsync(fh.fileno())
        return data // shape.block


def publish(tmp: Path, final: Path) -> None:
    """Put a finished file under its final name durably: fsync, rename, fsync the directory."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
