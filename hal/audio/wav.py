"""The audio devices' twins: a WAV file as the capture, a WAV file as the playback.

``WavCapture`` serves a file in periods, as fast as asked or paced at real
time; ``WavPlayback`` keeps every tone played. With them the daemon runs on a
laptop, and the tests drive it end to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from .interface import Chunk, DeviceUnavailable, as_mono_int16

SAMPLE_RATES = (8000, 16000)
#: Periods ``WavCapture`` reads from its file at a time (half a second at 20 ms).
READ_PERIODS = 25


class AudioFileError(DeviceUnavailable, ValueError):
    """A capture file that is missing, unreadable or not 8/16 kHz with 1-2 channels.

    Retrying will not help; the message names the file and the problem.
    """


class WavCapture:
    """A WAV file (1-2 channels, 8000 or 16000 Hz) served as capture periods.

    The file is checked on construction (``AudioFileError``), so ``sample_rate``
    and ``channels`` are known before ``open``. ``pace=True`` sleeps so periods
    arrive at real time, as from a device; ``pace=False`` serves them at once.
    ``read`` returns ``None`` at the end of the file. After ``close``, ``open``
    resumes where the file was left (a device does not rewind either).

    >>> import tempfile, soundfile
    >>> path = tempfile.mkdtemp() + "/line.wav"
    >>> soundfile.write(path, np.zeros((500, 2), np.int16), 8000)
    >>> line = WavCapture(path, period_ms=20)
    >>> line.sample_rate, line.channels, line.period_frames
    (8000, 2, 160)
    >>> line.open()
    >>> [len(line.read().frames) for _ in range(4)], line.read()
    ([160, 160, 160, 20], None)
    >>> line.close()
    """

    def __init__(
        self,
        path: str | Path,
        period_ms: int = 20,
        *,
        pace: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        info = _inspect(self.path)
        self.sample_rate: int = info.samplerate
        self.channels: int = info.channels
        self.frames: int = info.frames
        if period_ms <= 0:
            raise ValueError(f"period_ms must be positive, not {period_ms}")
        self.period_frames = self.sample_rate * period_ms // 1000
        self.pace = pace
        self.overruns = 0
        self.position = 0  # next frame of the file to serve
        self._clock = clock
        self._sleep = sleep
        self._file: sf.SoundFile | None = None
        self._anchor = (0.0, 0)  # (clock time, position) that pacing counts from
        # Read ahead READ_PERIODS periods at a time and served from memory: a read from the file costs
        # several times what serving a period does, and at real time the simulator should cost what a
        # device does, not what libsndfile's per-call overhead does.
        self._ahead = np.zeros((0, self.channels), np.int16)

    def __repr__(self) -> str:
        return f"WavCapture({str(self.path)!r})"

    def open(self) -> None:
        self.close()
        try:
            self._file = sf.SoundFile(self.path)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioFileError(f"{self.path}: cannot open ({exc})") from None
        self._file.seek(min(self.position, self.frames))
        self._ahead = np.zeros((0, self.channels), np.int16)
        self._anchor = (self._clock(), self.position)

    def read(self) -> Chunk | None:
        if self._file is None:
            raise RuntimeError(f"capture file {self.path} is not open")
        if len(self._ahead) < self.period_frames:
            try:
                more = self._file.read(self.period_frames * READ_PERIODS, dtype="int16", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioFileError(f"{self.path}: audio data is damaged ({exc})") from None
            self._ahead = np.concatenate([self._ahead, more]) if len(self._ahead) else more
        frames, self._ahead = self._ahead[: self.period_frames], self._ahead[self.period_frames :]
        if len(frames) == 0:
            return None
        self.position += len(frames)
        if self.pace:
            since, start = self._anchor
            wait = since + (self.position - start) / self.sample_rate - self._clock()
            if wait > 0:
                self._sleep(wait)
        return Chunk(np.ascontiguousarray(frames), 0)

    def skip(self, frames: int) -> int:
        """Move ``frames`` ahead without serving them (no pacing); returns how many were skipped."""
        skipped = max(0, min(frames, self.frames - self.position))
        self.position += skipped
        self._ahead = np.zeros((0, self.channels), np.int16)
        if self._file is not None:
            self._file.seek(self.position)
        return skipped

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


def _inspect(path: Path) -> sf._SoundFileInfo:
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioFileError(f"{path}: not a readable audio file ({exc})") from None
    if info.samplerate not in SAMPLE_RATES:
        raise AudioFileError(
            f"{path}: is {info.samplerate} Hz; the capture twin serves 8000 or 16000 Hz "
            "(convert it first, e.g. sox in.wav -r 16000 out.wav)"
        )
    if info.channels not in (1, 2):
        raise AudioFileError(f"{path}: has {info.channels} channels; 1 or 2 are supported")
    return info


class WavPlayback:
    """A playback twin: every tone played goes into a mono int16 WAV file, back to back.

    The file is created on ``open`` and finished properly on ``close``; opened
    again, it goes on after what was played.

    >>> import tempfile, soundfile
    >>> path = tempfile.mkdtemp() + "/tones.wav"
    >>> speaker = WavPlayback(path, 16000)
    >>> speaker.open()
    >>> speaker.play(np.full(800, 1000, np.int16))
    >>> speaker.play(np.full((400, 1), -1000, np.int16))
    >>> speaker.close()
    >>> soundfile.info(path).frames, speaker.frames_played
    (1200, 1200)
    """

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.frames_played = 0
        self._file: sf.SoundFile | None = None

    def __repr__(self) -> str:
        return f"WavPlayback({str(self.path)!r}, {self.sample_rate})"

    def open(self) -> None:
        if self._file is not None:
            return
        try:
            if self.frames_played:  # reopened: keep what was played before
                self._file = sf.SoundFile(self.path, "r+")
                self._file.seek(0, sf.SEEK_END)
            else:
                self._file = sf.SoundFile(self.path, "w", self.sample_rate, 1, subtype="PCM_16", format="WAV")
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise DeviceUnavailable(f"cannot open playback file {self.path}: {exc}") from None

    def play(self, frames: np.ndarray) -> None:
        if self._file is None:
            raise RuntimeError(f"playback file {self.path} is not open")
        mono = as_mono_int16(frames)
        self._file.write(mono)
        self.frames_played += len(mono)

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
