"""What the daemon sees of an audio device: a capture that yields periods of
int16 frames, a playback that takes tones, and the two ways a device fails.

``DeviceUnavailable`` comes from ``open`` (absent, busy, not enumerated yet:
try again later); ``DeviceLost`` comes from ``read`` (the device vanished
mid-stream: close, then reopen until it is back). A chunk says how many frames
were lost just before it (``gap``), so the daemon keeps audio time true by
inserting that much silence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class DeviceUnavailable(Exception):
    """The device cannot be opened now (absent, busy, not yet enumerated).

    The message names the device and the ALSA (or file) error.
    """


class UnsupportedFormat(DeviceUnavailable):
    """The device opened but cannot give the asked rate, channels or format.

    Retrying will not help; the message says what the device offers instead.
    """


class DeviceLost(Exception):
    """The device vanished during a read (USB unplugged: ENODEV, EIO, ...)."""


@dataclass(frozen=True, slots=True, eq=False)
class Chunk:
    """One period of captured audio.

    ``frames`` is int16 of shape (n, channels), C-contiguous; ``gap`` is the
    number of frames lost immediately before these (an overrun), which the
    daemon replaces with silence.

    >>> chunk = Chunk(np.zeros((320, 2), np.int16), gap=160)
    >>> chunk.frames.shape, chunk.gap
    ((320, 2), 160)
    """

    frames: np.ndarray
    gap: int = 0


@runtime_checkable
class Capture(Protocol):
    """A source of audio periods: an ALSA PCM, a WAV file, or a fault-injecting wrapper.

    ``open`` raises ``DeviceUnavailable`` and may be called again after
    ``close`` or ``DeviceLost`` (reopen). ``read`` blocks for one period (paced
    by the device), returns ``None`` at the end of a file-backed input, and
    raises ``DeviceLost``. A chunk may be shorter than a period (at the end of
    the input, or where a fault splits it).
    """

    sample_rate: int
    channels: int
    period_frames: int
    overruns: int

    def open(self) -> None: ...

    def read(self) -> Chunk | None: ...

    def close(self) -> None: ...


@runtime_checkable
class Playback(Protocol):
    """Where the box's tones go: int16 mono frames at the playback's sample rate.

    ``play`` returns at once; the tone is written in the background.
    """

    def open(self) -> None: ...

    def play(self, frames: np.ndarray) -> None: ...

    def close(self) -> None: ...


def level_dbfs(frames: np.ndarray) -> float:
    """RMS level of int16 frames in dBFS, -inf for silence or no frames.

    Full scale is a square wave at 32768 (so a full-scale sine reads -3 dB),
    the same reference as the core's speech detector.

    >>> level_dbfs(np.zeros(160, np.int16))
    -inf
    >>> round(level_dbfs(np.full((160, 2), -32768, np.int16)), 1)
    0.0
    >>> t = np.arange(16000) / 16000
    >>> round(level_dbfs((3277 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)), 1)
    -23.0
    """
    samples = np.asarray(frames, dtype=np.float64).reshape(-1)
    if samples.size == 0:
        return -math.inf
    mean_square = float(np.dot(samples, samples)) / samples.size
    if mean_square == 0.0:
        return -math.inf
    return 10 * math.log10(mean_square / 32768.0**2)


def as_mono_int16(frames: np.ndarray) -> np.ndarray:
    """Tone frames for a mono playback: int16 of shape (n,), from (n,) or (n, 1).

    >>> as_mono_int16(np.ones((3, 1), np.int16)).shape
    (3,)
    """
    array = np.asarray(frames)
    if array.dtype != np.int16:
        raise TypeError(f"playback takes int16 frames, not {array.dtype}")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"playback takes mono frames of shape (n,) or (n, 1), not {array.shape}")
    return np.ascontiguousarray(array)
