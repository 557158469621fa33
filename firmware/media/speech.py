"""Speech from espeak-ng, for the demo call (and the tests' talk-off checks)."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import soundfile as sf
import soxr


class SpeechUnavailable(RuntimeError):
    pass


def speak(
    text: str, sample_rate: int, voice: str = "en-us", words_per_minute: int = 160, pitch: int = 50
) -> np.ndarray:
    """``text`` spoken by espeak-ng, as float samples at ``sample_rate`` (peak about 0.5 of full scale)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechUnavailable("espeak-ng is not installed (apt-get install espeak-ng)")
    result = subprocess.run(
        [exe, "-v", voice, "-s", str(words_per_minute), "-p", str(pitch), "--stdout", text],
        capture_output=True,
        check=True,
    )
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float64")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = soxr.resample(audio, rate, sample_rate)
    peak = float(np.max(np.abs(audio))) or 1.0
    return audio / peak * 0.5 * 32767
