"""Speech/silence detection with an adaptive noise floor.

Theory of operation
-------------------
The signal is cut into 10 ms blocks and each block's energy taken in dBFS. The
noise floor is a minimum statistic (after R. Martin, "Noise power spectral
density estimation based on optimal smoothing and minimum statistics", IEEE
Trans. SAP 9(5), 2001, reduced to broadband energy): the lowest block energy
over the last three seconds, kept as the minima of 0.25 s sub-windows plus the
running minimum of the current one. Speech pauses between syllables keep the
floor down while someone talks; a steady hiss becomes the floor within one
sub-window, so a noisy line still counts as silent.

A block is speech when its energy is above both ``floor + margin`` and an
absolute threshold, both set by ``input_sensitivity`` (0-100; higher means
quieter sounds count as speech). The detector itself is shared by every
recording on a track; each recording applies its own sensitivity to the
energies and floors it returns.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

BLOCK_SECONDS = 0.010
SUBWINDOW_BLOCKS = 25
HISTORY_SUBWINDOWS = 12
SILENT_DB = -120.0


@dataclass(frozen=True, slots=True)
class Blocks:
    """Blocks completed by one call: block ``i`` ends at sample ``ends[i]``."""

    ends: np.ndarray  # int64 absolute sample index after each block
    energy_db: np.ndarray
    floor_db: np.ndarray

    def speech(self, sensitivity: float) -> np.ndarray:
        return is_speech(self.energy_db, self.floor_db, sensitivity)


def thresholds(sensitivity: float) -> tuple[float, float]:
    """(margin over the floor in dB, absolute threshold in dBFS)."""
    margin = 24.0 - 0.2 * sensitivity
    absolute = -40.0 - 0.3 * sensitivity
    return margin, absolute


def is_speech(energy_db: np.ndarray, floor_db: np.ndarray, sensitivity: float) -> np.ndarray:
    margin, absolute = thresholds(sensitivity)
    return (energy_db > floor_db + margin) & (energy_db > absolute)


class SpeechDetector:
    """Block energies and noise floor of one signal, streamed.

    >>> import numpy as np
    >>> det = SpeechDetector(8000)
    >>> hiss = np.random.default_rng(0).normal(0, 300, 8000 * 2).astype(np.int16)
    >>> bool(det.process(hiss).speech(44)[-50:].any())
    False
    """

    def __init__(self, sample_rate: int) -> None:
        self.block = round(BLOCK_SECONDS * sample_rate)
        self._tail = np.zeros(0, dtype=np.float64)
        self._consumed = 0  # absolute sample where ``_tail`` starts
        self._minima: deque[float] = deque(maxlen=HISTORY_SUBWINDOWS)
        self._current_min = np.inf
        self._in_subwindow = 0

    def process(self, samples: np.ndarray) -> Blocks:
        x = samples.astype(np.float64)
        buf = np.concatenate([self._tail, x]) if self._tail.size else x
        count = buf.size // self.block
        used = count * self.block
        blocks = buf[:used].reshape(count, self.block)
        energy = 10 * np.log10(np.einsum("ij,ij->i", blocks, blocks) / (self.block * 32768.0**2) + 1e-12)
        energy = np.maximum(energy, SILENT_DB)
        floor = np.empty(count)
        i = 0
        while i < count:
            take = min(SUBWINDOW_BLOCKS - self._in_subwindow, count - i)
            part = energy[i : i + take]
            running = np.minimum.accumulate(np.concatenate([[self._current_min], part]))[1:]
            history = min(self._minima) if self._minima else np.inf
            floor[i : i + take] = np.minimum(running, history)
            self._current_min = running[-1]
            self._in_subwindow += take
            if self._in_subwindow == SUBWINDOW_BLOCKS:
                self._minima.append(self._current_min)
                self._current_min = np.inf
                self._in_subwindow = 0
            i += take
        ends = self._consumed + self.block * np.arange(1, count + 1, dtype=np.int64)
        self._consumed += used
        self._tail = buf[used:].copy()
        return Blocks(ends, energy, floor)
