"""Streaming writers: they take frames as they come and never hold a recording.

Both count the bytes they produce and give the file's sha256 when closed. An
MP3 is only ever appended to, so its digest is taken as it is written; a WAV
header is rewritten with the final length on close, so its digest is taken in
one streaming pass over the finished file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import lameenc
import numpy as np
import soundfile as sf

_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    frames: int
    size: int
    sha256: str


class Writer(Protocol):
    path: Path

    def write(self, frames: np.ndarray) -> None: ...

    def close(self) -> Written: ...


class WavWriter:
    """16-bit PCM WAV, streamed through libsndfile.

    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> w = WavWriter(path, 8000, 1)
    >>> w.write(np.zeros((800, 1), np.int16))
    >>> w.close().frames
    800
    """

    def __init__(self, path: Path, sample_rate: int, channels: int) -> None:
        self.path = Path(path)
        self._file = sf.SoundFile(
            self.path, "w", samplerate=sample_rate, channels=channels, subtype="PCM_16", format="WAV"
        )
        self._frames = 0

    def write(self, frames: np.ndarray) -> None:
        self._file.write(frames)
        self._frames += len(frames)

    def close(self) -> Written:
        self._file.close()
        return Written(self.path, self._frames, self.path.stat().st_size, file_sha256(self.path))


class Mp3Writer:
    """Constant-bit-rate MP3 through LAME; ``kbps_per_channel`` defaults to 32.

    A writer given no samples closes to an empty file: LAME only flushes an
    encoder that has encoded something ("Not currently encoding" otherwise).
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, kbps_per_channel: int = 32) -> None:
        self.path = Path(path)
        enc = lameenc.Encoder()
        enc.set_bit_rate(kbps_per_channel * channels)
        enc.set_in_sample_rate(sample_rate)
        enc.set_out_sample_rate(sample_rate)
        enc.set_channels(channels)
        enc.set_quality(5)
        self._encoder = enc
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._hash = hashlib.sha256()
        self._size = 0
        self._frames = 0

    def write(self, frames: np.ndarray) -> None:
        self._emit(self._encoder.encode(np.ascontiguousarray(frames, dtype="<i2").tobytes()))
        self._frames += len(frames)

    def close(self) -> Written:
        try:
            if self._frames:
                self._emit(self._encoder.flush())
        finally:
            self._file.close()
        return Written(self.path, self._frames, self._size, self._hash.hexdigest())

    def _emit(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self._hash.update(data)
            self._size += len(data)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def open_writer(path: Path, fmt: str, sample_rate: int, channels: int, mp3_kbps: int = 32) -> Writer:
    if fmt == "wav":
        return WavWriter(path, sample_rate, channels)
    if fmt == "mp3":
        return Mp3Writer(path, sample_rate, channels, mp3_kbps)
    raise ValueError(f"unknown format {fmt!r}; expected wav or mp3")
