"""Streaming writers: they take frames as they come and never hold a recording.

Both give the file's size and sha256 when closed. Each rewrites its start on
close (a WAV its header with the final length, an MP3 its first frame with the
LAME tag, ``mp3tag``), so the digest is taken in one streaming pass over the
finished file. Neither file is complete before ``close``: finalising writes
them under a hidden name and publishes them only after (``finalize``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import lameenc
import numpy as np
import soundfile as sf

from . import mp3tag

_CHUNK = 1 << 16
#: LAME's -q (0 best .. 9 fastest); the LAME tag records it.
_MP3_QUALITY = 5


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
    """Constant-bit-rate MP3 through LAME, with a LAME tag; ``kbps_per_channel`` defaults to 32.

    Its first frame is a placeholder (a frame of silence) until ``close`` writes
    the tag over it: the frame count, encoder delay and padding that let a
    decoder give back exactly the samples written (``mp3tag``). A file cut off
    before ``close`` still plays, 1105 samples and a frame late.

    A writer given no samples closes to an empty file: LAME only flushes an
    encoder that has encoded something ("Not currently encoding" otherwise).

    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.mp3"
    >>> w = Mp3Writer(path, 8000, 1)
    >>> w.write(np.zeros((8000, 1), np.int16))
    >>> w.close().frames, path.read_bytes()[13:17]
    (8000, b'Info')
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, kbps_per_channel: int = 32) -> None:
        self.path = Path(path)
        enc = lameenc.Encoder()
        enc.set_bit_rate(kbps_per_channel * channels)
        enc.set_in_sample_rate(sample_rate)
        enc.set_out_sample_rate(sample_rate)
        enc.set_channels(channels)
        enc.set_quality(_MP3_QUALITY)
        self._encoder = enc
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._audio = mp3tag.Tally()
        self._head = b""  # LAME's first bytes, until they hold a frame header: the tag's frame depends on it
        self._frames = 0

    def write(self, frames: np.ndarray) -> None:
        self._emit(self._encoder.encode(np.ascontiguousarray(frames, dtype="<i2").tobytes()))
        self._frames += len(frames)

    def close(self) -> Written:
        try:
            if self._frames:
                self._emit(self._encoder.flush())
                audio = self._audio
                tag = mp3tag.info_frame(
                    audio.first,
                    frames=audio.frames,
                    audio_bytes=audio.bytes,
                    music_crc=audio.crc,
                    samples=self._frames,
                    quality=_MP3_QUALITY,
                )
                self._file.seek(0)
                self._file.write(tag)
        finally:
            self._file.close()
        return Written(self.path, self._frames, self.path.stat().st_size, file_sha256(self.path))

    def _emit(self, data: bytes) -> None:
        if not self._audio.bytes:  # the first audio: the tag's frame, written ahead of it, follows its header
            self._head += data
            if len(self._head) < 4:
                return
            data, self._head = self._head, b""
            self._file.write(mp3tag.placeholder(mp3tag.parse_header(data)))
        if data:
            self._audio.feed(data)
            self._file.write(data)


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
