"""Reading an input audio file in pieces, converted to 8 or 16 kHz int16.

An input is checked before a sample is read, so that a bad one is refused in
one line instead of hanging or filling a disk: it must be a regular file (a
named pipe with no writer blocks the open for ever, a device never ends), the
user must be allowed to read it, and its header must describe audio that can
be recorded: 1 or 2 channels, a rate from ``MIN_RATE`` to ``MAX_RATE`` (a
header that says 1 Hz turns 16 KB into two hours of output at 16 kHz), and at
least one frame. libsndfile already counts only the frames the file holds, so
a header that claims more data than there is cannot make the input longer.

``Unreadable`` is an input that cannot be opened at all; ``InputError`` one
whose content cannot be used.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

#: The input rates taken: telephone audio up to the highest common studio rate. The core runs at 8000 or
#: 16000 Hz; other rates are converted.
MIN_RATE, MAX_RATE = 8000, 192000

#: What a path is when it is not a regular file, in a user's words.
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class InputError(ValueError):
    """An input file that cannot be used; the message names the problem."""


class Unreadable(InputError):
    """An input that cannot be opened for reading: missing, not a regular file, or not allowed."""


class AudioFile:
    """An input file opened for reading; ``rate`` is the rate frames come out at.

    ``rate=None`` keeps the file's own rate when the core runs at it (8000 or
    16000 Hz) and converts any other to ``convert_to``. The file is closed when
    ``pieces`` ends, or by ``close`` (or ``with``) when it is not read to its end.

    >>> import tempfile, pathlib, numpy as np, soundfile as sf
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> sf.write(path, np.zeros(4410, np.int16), 44100)
    >>> source = AudioFile(path, convert_to=8000)
    >>> source.file_rate, source.rate, [len(p) for p in source.pieces()]
    (44100, 8000, [800])
    """

    def __init__(self, path: Path, rate: int | None = None, *, convert_to: int = 16000) -> None:
        self.path = Path(path)
        self._fd = _open_regular(self.path)  # ours to close: libsndfile would close it on a failed open too
        try:
            self._file = sf.SoundFile(self._fd, closefd=False)
        except (sf.LibsndfileError, RuntimeError) as exc:
            os.close(self._fd)
            raise InputError(f"{self.path}: not a readable audio file ({_detail(exc)})") from None
        self.file_rate = self._file.samplerate
        self.channels = self._file.channels
        self.frames = self._file.frames
        try:
            self._check()
        except InputError:
            self.close()
            raise
        if rate is None:
            rate = self.file_rate if self.file_rate in (8000, 16000) else convert_to
        self.rate = rate
        self.duration = self.frames / self.file_rate

    def _check(self) -> None:
        if self.channels not in (1, 2):
            raise InputError(f"{self.path}: has {self.channels} channels; 1 or 2 are supported")
        if not MIN_RATE <= self.file_rate <= MAX_RATE:
            raise InputError(
                f"{self.path}: its header says {self.file_rate} Hz; an input must be {MIN_RATE} to {MAX_RATE} Hz"
            )
        if self.frames <= 0:
            raise InputError(
                f"{self.path}: holds no audio (0 frames after its header); an input needs at least one frame"
            )

    def pieces(self, seconds: float = 1.0) -> Iterator[np.ndarray]:
        """Frames as int16 (n, channels) pieces of about ``seconds`` each."""
        size = max(1, int(self.file_rate * seconds))
        stream = None
        if self.file_rate != self.rate:
            stream = soxr.ResampleStream(self.file_rate, self.rate, self.channels, dtype="int16")
        try:
            while True:
                try:
                    block = self._file.read(size, dtype="int16", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise InputError(f"{self.path}: audio data is damaged ({_detail(exc)})") from None
                last = len(block) < size
                if stream is not None:
                    block = stream.resample_chunk(block, last=last)
                if len(block):
                    yield np.ascontiguousarray(block)
                if last:
                    return
        finally:
            self.close()

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self._file.close()
        finally:
            os.close(self._fd)
            self._fd = -1


def _open_regular(path: Path) -> int:
    """A descriptor of ``path`` opened for reading, which must be a regular file (``Unreadable`` if not).

    The path is looked at before it is opened (opening a device can do something), and the descriptor
    again after, without blocking: a path swapped for a named pipe in between is refused, not waited on.
    """
    try:
        _check_kind(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unreadable(f"{path}: no such file") from None
    except PermissionError:
        raise Unreadable(f"{path}: permission denied; the input must be a file this user can read") from None
    except OSError as exc:
        raise Unreadable(f"{path}: cannot open ({exc.strerror})") from None
    try:
        _check_kind(path, os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_kind(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
        raise Unreadable(
            f"{path}: is {kind}, not a file; an input must be an audio file (WAV or any libsndfile format)"
        )


def _detail(exc: Exception) -> str:
    """libsndfile's own words, without the descriptor number it was opened by."""
    return (getattr(exc, "error_string", None) or str(exc)).strip()
