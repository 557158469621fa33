"""Reading an input audio file in pieces, converted to 8 or 16 kHz int16."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class InputError(ValueError):
    """An input file that cannot be used; the message names the problem."""


class AudioFile:
    """An input file opened for reading; ``rate`` is the rate frames come out at."""

    def __init__(self, path: Path, rate: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            self._file = sf.SoundFile(self.path)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise InputError(f"{self.path}: not a readable audio file ({exc})") from None
        self.file_rate = self._file.samplerate
        self.channels = self._file.channels
        if self.channels not in (1, 2):
            self._file.close()
            raise InputError(f"{self.path}: has {self.channels} channels; 1 or 2 are supported")
        if rate is None:
            rate = self.file_rate if self.file_rate in (8000, 16000) else 16000
        self.rate = rate
        self.frames = self._file.frames
        self.duration = self.frames / self.file_rate

    def pieces(self, seconds: float = 1.0) -> Iterator[np.ndarray]:
        """Frames as int16 (n, channels) pieces of about ``seconds`` each."""
        size = max(1, int(self.file_rate * seconds))
        stream = None
        if self.file_rate != self.rate:
            stream = soxr.ResampleStream(self.file_rate, self.rate, self.channels, dtype="int16")
        with self._file as fh:
            while True:
                try:
                    block = fh.read(size, dtype="int16", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise InputError(f"{self.path}: audio data is damaged ({exc})") from None
                last = len(block) < size
                if stream is not None:
                    block = stream.resample_chunk(block, last=last)
                if len(block):
                    yield np.ascontiguousarray(block)
                if last:
                    return
