"""DTMF accuracy on a generated corpus, per category, and false keys on speech and music.

Every required digit must be found exactly once; no off-frequency (3.5 %) or
too-short (20 ms) tone may be accepted; no key may be raised on speech or music.
"""

from __future__ import annotations

import os
import time

import numpy as np

from firmware.core.dtmf import KEYS, DtmfDetector, KeyUp
from firmware.media.speech import speak
from firmware.media.synth import dtmf_tone
from tests.signals import music

REPEATS = int(os.environ.get("BENCH_DTMF_REPEATS", 10))
TALK_MINUTES = float(os.environ.get("BENCH_TALK_MINUTES", 30))


def keys_in(x: np.ndarray, rate: int) -> list[str]:
    det = DtmfDetector(rate)
    x = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    found = []
    for i in range(0, x.size, rate // 50):
        found += det.process(x[i : i + rate // 50])
    found += det.flush()
    return [e.key for e in found if isinstance(e, KeyUp)]


def category(rate, rng, *, seconds=(0.04, 0.1), dbfs=(-25, -5), twist=(-4, 8), dev=(-0.015, 0.015), snr=None, gap=0.05):
    """A sequence of every key with parameters drawn from the ranges; returns (signal, digits)."""
    parts, digits = [np.zeros(rate // 10)], ""
    for _ in range(REPEATS):
        for k in KEYS:
            tone = dtmf_tone(k, rate, rng.uniform(*seconds), rng.uniform(*dbfs), rng.uniform(*twist), rng.uniform(*dev))
            if snr is not None:
                p = np.mean(tone**2)
                tone = tone + rng.normal(0, np.sqrt(p / 10 ** (snr / 10)), tone.size)
            gap_n = round(gap * rate)
            noise = (
                rng.normal(0, np.sqrt(np.mean(tone**2) / 10 ** (snr / 10)), gap_n)
                if snr is not None
                else np.zeros(gap_n)
            )
            parts += [tone, noise]
            digits += k
    return np.concatenate(parts), digits


def main() -> None:
    rng = np.random.default_rng(11)
    print(f"DTMF accuracy ({REPEATS} x 16 keys per category):")
    for rate in (8000, 16000):
        cats = {
            "nominal levels -25..-5 dBFS": dict(dev=(0, 0), twist=(0, 0)),
            "frequency offset +-1.5 %": dict(dev=(-0.015, 0.015)),
            "twist 8 dB normal / 4 dB reverse": dict(twist=(-4, 8)),
            "SNR 10-20 dB": dict(snr=15, dbfs=(-20, -10)),
            "SNR 10 dB, 40 ms": dict(snr=10, seconds=(0.04, 0.041), dbfs=(-20, -10)),
            "minimum duration 40 ms": dict(seconds=(0.040, 0.0401)),
            "caller sequence, 40 ms gaps": dict(seconds=(0.045, 0.06), gap=0.04),
        }
        for name, kw in cats.items():
            x, digits = category(rate, rng, **kw)
            got = "".join(keys_in(x, rate))
            print(
                f"  {rate:5d} Hz {name:34s} detected {sum(a == b for a, b in zip(got, digits, strict=False)) / len(digits):7.2%}  ({len(got)} keys for {len(digits)})"
            )
        for name, kw in {
            "3.5 % off frequency": dict(dev=(0.035, 0.05)),
            "-3.5 % off frequency": dict(dev=(-0.05, -0.035)),
            "20 ms tones": dict(seconds=(0.015, 0.020)),
        }.items():
            x, digits = category(rate, rng, **kw)
            print(f"  {rate:5d} Hz {name:34s} accepted {len(keys_in(x, rate))} of {len(digits)} (must be 0)")
    talk_texts = [
        "The quick brown fox jumps over the lazy dog while the telephone keeps ringing.",
        "Please leave your message after the tone and we will call you back.",
        "One two three four five six seven eight nine zero star and hash.",
    ]
    voices = ["en-us", "en-gb", "en+f3", "en+m3", "de", "fr", "es", "en+f4"]
    rate = 8000
    talk = []
    total = 0.0
    while total < TALK_MINUTES * 60:
        for v in voices:
            for t in talk_texts:
                y = speak(
                    t, rate, voice=v, pitch=int(rng.integers(20, 80)), words_per_minute=int(rng.integers(130, 220))
                )
                talk.append(y * rng.uniform(0.3, 1.8))
                total += y.size / rate
    x = np.concatenate(talk)
    t0 = time.process_time()
    false = keys_in(x, rate)
    spent = time.process_time() - t0
    print(
        f"  false keys in {x.size / rate / 60:.0f} min of espeak-ng speech: {len(false)} ({spent / (x.size / rate) * 3600:.2f} CPU s/hour)"
    )

    y = music(TALK_MINUTES * 60, rate, seed=5)
    print(f"  false keys in {TALK_MINUTES:.0f} min of synthetic music: {len(keys_in(y, rate))}")


if __name__ == "__main__":
    main()
