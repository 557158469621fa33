"""Tones the box itself plays: the start beep and the recording-warning tone.

The warning tone follows the common consent-tone convention (FCC 47 CFR 64.501
style: a 1400 Hz tone of about 0.2 s repeated while recording).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class ToneKind(StrEnum):
    BEEP = "beep"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class ToneSpec:
    frequency: float
    seconds: float
    dbfs: float


TONES = {
    ToneKind.BEEP: ToneSpec(1000.0, 0.25, -12.0),
    ToneKind.WARNING: ToneSpec(1400.0, 0.20, -18.0),
}

_RAMP_SECONDS = 0.005


def render(kind: ToneKind, sample_rate: int) -> np.ndarray:
    """The tone as int16 samples, with short raised-cosine ramps (no clicks)."""
    spec = TONES[kind]
    n = round(spec.seconds * sample_rate)
    t = np.arange(n) / sample_rate
    wave = np.sin(2 * np.pi * spec.frequency * t) * (32767 * 10 ** (spec.dbfs / 20))
    ramp = round(_RAMP_SECONDS * sample_rate)
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    wave[:ramp] *= edge
    wave[-ramp:] *= edge[::-1]
    return np.round(wave).astype(np.int16)
