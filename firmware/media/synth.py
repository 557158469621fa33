"""Signals the box makes on purpose: DTMF key tones (for timelines, the demo,
tests and benchmarks)."""

from __future__ import annotations

import numpy as np

from ..core.dtmf import COL_FREQS, KEY_GRID, ROW_FREQS


def dtmf_tone(
    key: str,
    sample_rate: int,
    seconds: float = 0.1,
    dbfs: float = -10.0,
    twist_db: float = 0.0,
    deviation: float = 0.0,
) -> np.ndarray:
    """Float samples of key ``key``: each tone at ``dbfs`` (peak), the low group
    ``twist_db`` louder than the high group, both ``deviation`` off nominal."""
    row = next(i for i, keys in enumerate(KEY_GRID) if key in keys)
    col = KEY_GRID[row].index(key)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    amp = 32767 * 10 ** (dbfs / 20)
    low = amp * 10 ** (twist_db / 40)
    high = amp * 10 ** (-twist_db / 40)
    f_low, f_high = ROW_FREQS[row] * (1 + deviation), COL_FREQS[col] * (1 + deviation)
    return low * np.sin(2 * np.pi * f_low * t) + high * np.sin(2 * np.pi * f_high * t)


def mix(into: np.ndarray, signal: np.ndarray, at: int, channel: int | None = None) -> None:
    """Add ``signal`` into int16 frames ``into`` (n, ch) starting at frame ``at`` (clipped)."""
    lo, hi = max(at, 0), min(at + len(signal), len(into))
    if hi <= lo:
        return
    part = signal[lo - at : hi - at]
    cols = range(into.shape[1]) if channel is None else [channel]
    for ch in cols:
        into[lo:hi, ch] = np.clip(into[lo:hi, ch] + part, -32768, 32767).astype(np.int16)
