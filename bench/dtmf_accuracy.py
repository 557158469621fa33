"""DTMF accuracy on a generated corpus, per category, and false keys on speech, music and line tones.

Every key must be reported exactly once, with its start within 60 ms of the tone's
onset; no off-frequency (3.5 %) or too-short (20 ms) tone may be accepted; no key may
be raised on speech, music, call-progress or fax tones. Every category is fed in
20 ms pieces and again in 80 ms, 100 ms and 1 s pieces, which must give the same
events to the sample.

Caller-like categories (issue 15) press keys as callers do: 50-250 ms tones, 50-500 ms
gaps, +-1 % frequency error, twist -5 to +3 dB, half the keys repeating the key just
pressed (``11``) or the one before it (``545``). Noise is set against the power of a key
at the caller's level (white over the whole band; pink falling 3 dB an octave from
below 1 Hz), speech by its active level (ITU-T P.56, simplified), utterance by
utterance.

Environment: ``BENCH_DTMF_REPEATS`` (each key this many times in the Q.24 categories,
10), ``BENCH_DTMF_CALLER_KEYS`` (keys per caller-like category and rate, 1000),
``BENCH_TALK_MINUTES`` (minutes of speech and of music per rate, 30),
``BENCH_TONE_MINUTES`` (minutes of each call-progress and fax tone per rate, 2).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from firmware.core.dtmf import KEYS, DtmfDetector, KeyDown, KeyUp
from firmware.media.speech import speak
from firmware.media.synth import dtmf_tone
from tests.signals import active_power, caller_keys, mulaw, music, pink_noise

REPEATS = int(os.environ.get("BENCH_DTMF_REPEATS", 10))
CALLER_KEYS = int(os.environ.get("BENCH_DTMF_CALLER_KEYS", 1000))
TALK_MINUTES = float(os.environ.get("BENCH_TALK_MINUTES", 30))
TONE_MINUTES = float(os.environ.get("BENCH_TONE_MINUTES", 2))

PIECES = (0.02, 0.08, 0.1, 1.0)
START_TOLERANCE = 0.060
KEYS_PER_CALL = 20

TALK_TEXTS = [
    "The quick brown fox jumps over the lazy dog while the telephone keeps ringing.",
    "Please leave your message after the tone and we will call you back.",
    "One two three four five six seven eight nine zero star and hash.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
]
VOICES = ["en-us", "en-gb", "en+f3", "en+m3", "de", "fr", "es", "en+f4"]

Presses = list[tuple[str, int, int]]


def events_in(x: np.ndarray, rate: int, piece: float) -> list[KeyDown | KeyUp]:
    det = DtmfDetector(rate)
    x = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    size = round(piece * rate)
    found: list[KeyDown | KeyUp] = []
    for i in range(0, x.size, size):
        found += det.process(x[i : i + size])
    return found + det.flush()


def detect(x: np.ndarray, rate: int) -> tuple[list[KeyUp], bool, float]:
    """Keys reported in 20 ms pieces, whether the other piece sizes gave the same events, and
    the CPU seconds the 20 ms pieces took."""
    spent = time.process_time()
    reference = events_in(x, rate, PIECES[0])
    spent = time.process_time() - spent
    same = all(events_in(x, rate, piece) == reference for piece in PIECES[1:])
    return [e for e in reference if isinstance(e, KeyUp)], same, spent


def score(presses: Presses, found: list[KeyUp], rate: int) -> dict[str, int]:
    """Each report goes to the press it overlaps (with the tolerance either side) whose onset
    is nearest; a press is right when exactly one report goes to it, of its key, starting
    within the tolerance."""
    tol = round(START_TOLERANCE * rate)
    mine: list[list[KeyUp]] = [[] for _ in presses]
    false = 0
    for e in found:
        near = [i for i, (_, s, t) in enumerate(presses) if e.start < t + tol and e.end > s - tol]
        if not near:
            false += 1
            continue
        mine[min(near, key=lambda i: abs(presses[i][1] - e.start))].append(e)
    right = sum(
        len(m) == 1 and m[0].key == k and abs(m[0].start - s) <= tol for m, (k, s, _) in zip(mine, presses, strict=True)
    )
    missed = sum(not m for m in mine)
    return {
        "keys": len(presses),
        "right": right,
        "missed": missed,
        "wrong": len(presses) - right - missed,
        "false": false,
    }


# -- the Q.24 categories: every key in turn, one parameter pushed to its limit ----------------------


def q24_keys(rate, rng, *, seconds=(0.04, 0.1), dbfs=(-25, -5), twist=(-4, 8), dev=(-0.015, 0.015), snr=None, gap=0.05):
    """Every key REPEATS times with parameters drawn from the ranges, in white noise at ``snr``."""
    parts, presses, at = [np.zeros(rate // 10)], [], rate // 10
    for _ in range(REPEATS):
        for k in KEYS:
            tone = dtmf_tone(k, rate, rng.uniform(*seconds), rng.uniform(*dbfs), rng.uniform(*twist), rng.uniform(*dev))
            gap_n = round(gap * rate)
            noise = np.zeros(tone.size + gap_n)
            if snr is not None:
                noise = rng.normal(0, np.sqrt(np.mean(tone**2) / 10 ** (snr / 10)), noise.size)
            parts.append(np.concatenate([tone, np.zeros(gap_n)]) + noise)
            presses.append((k, at, at + tone.size))
            at += tone.size + gap_n
    return np.concatenate(parts), presses


Q24 = {
    "nominal, -25 to -5 dBFS per tone": dict(dev=(0, 0), twist=(0, 0)),
    "frequency offset within +-1.5 %": dict(dev=(-0.015, 0.015)),
    "twist 8 dB normal / 4 dB reverse": dict(twist=(-4, 8)),
    "white noise, SNR 15 dB": dict(snr=15, dbfs=(-20, -10)),
    "white noise, SNR 10 dB, 40 ms tones": dict(snr=10, seconds=(0.04, 0.041), dbfs=(-20, -10)),
    "minimum duration 40 ms": dict(seconds=(0.040, 0.0401)),
    "45-60 ms tones, 40 ms gaps": dict(seconds=(0.045, 0.06), gap=0.04),
}
REJECT = {
    "tones 3.5-5 % above nominal": dict(dev=(0.035, 0.05)),
    "tones 3.5-5 % below nominal": dict(dev=(-0.05, -0.035)),
    "tones of 15-20 ms": dict(seconds=(0.015, 0.020)),
}


# -- caller-like categories (issue 15) -------------------------------------------------------------


def callers(rate: int, rng: np.random.Generator, impair: Callable) -> tuple[np.ndarray, Presses]:
    """CALLER_KEYS caller-like keys, KEYS_PER_CALL a call, each call through ``impair``."""
    parts, presses, at = [], [], 0
    for _ in range(max(1, CALLER_KEYS // KEYS_PER_CALL)):
        x, pressed, key_power = caller_keys(rate, rng, KEYS_PER_CALL)
        x = impair(x, key_power, rate, rng)
        presses += [(k, s + at, e + at) for k, s, e in pressed]
        parts.append(x)
        at += x.size
    return np.concatenate(parts), presses


def line_noise(x, key_power, rate, rng):
    """White or pink noise (a call each) at 24-32 dB SNR; half the calls through G.711 mu-law."""
    noise = pink_noise(x.size, rng) if rng.uniform() < 0.5 else rng.normal(0, 1, x.size)
    x = x + noise * np.sqrt(key_power / 10 ** (rng.uniform(24, 32) / 10))
    return mulaw(x) if rng.uniform() < 0.5 else x


def pink_15db(x, key_power, rate, rng):
    """Pink noise at 15 dB SNR; half the calls through G.711 mu-law."""
    x = x + pink_noise(x.size, rng) * np.sqrt(key_power / 10 ** (15 / 10))
    return mulaw(x) if rng.uniform() < 0.5 else x


def talk_down(x, key_power, rate, rng):
    """The caller talks over the keys: each utterance 10 dB below a key (speech-to-tone ratio -10 dB)."""
    talk = [np.zeros(0)]
    while sum(t.size for t in talk) < x.size:
        y = speak(
            TALK_TEXTS[rng.integers(len(TALK_TEXTS))],
            rate,
            voice=VOICES[rng.integers(len(VOICES))],
            pitch=int(rng.integers(20, 80)),
            words_per_minute=int(rng.integers(130, 220)),
        )
        talk.append(y * np.sqrt(key_power * 10 ** (-10 / 10) / active_power(y, rate)))
    return x + np.concatenate(talk)[: x.size]


CALLERS = {
    "callers: repeats, white/pink 24-32 dB, half mu-law": line_noise,
    "callers: pink noise, SNR 15 dB, half mu-law": pink_15db,
    "callers: under speech, STR -10 dB": talk_down,
}


# -- talk-off: no key may be raised -----------------------------------------------------------------


def speech_minutes(minutes: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    talk, total = [], 0
    while total < minutes * 60 * rate:
        for v in VOICES:
            for t in TALK_TEXTS:
                y = speak(
                    t, rate, voice=v, pitch=int(rng.integers(20, 80)), words_per_minute=int(rng.integers(130, 220))
                )
                talk.append(y * rng.uniform(0.3, 1.8))
                total += y.size
    return np.concatenate(talk)


def cadenced(rate: int, seconds: float, freqs: tuple[float, ...], on: float, off: float, dbfs: float) -> np.ndarray:
    """Tones at ``freqs`` (each at ``dbfs`` peak), ``on`` seconds then ``off`` seconds, for ``seconds``."""
    t = np.arange(round(seconds * rate)) / rate
    y = sum(np.sin(2 * np.pi * f * t) for f in freqs) * 32767 * 10 ** (dbfs / 20)
    if off:
        y = y * ((t % (on + off)) < on)
    return y


def line_tones(rate: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Call-progress tones (North American) and fax tones, in white noise at 30 dB SNR."""
    s = TONE_MINUTES * 60
    tones = {
        "dial tone 350+440 Hz": cadenced(rate, s, (350, 440), 1, 0, -13),
        "busy 480+620 Hz, 0.5 s on/off": cadenced(rate, s, (480, 620), 0.5, 0.5, -13),
        "ringback 440+480 Hz, 2 s on, 4 s off": cadenced(rate, s, (440, 480), 2, 4, -13),
        "fax CNG 1100 Hz, 0.5 s on, 3 s off": cadenced(rate, s, (1100,), 0.5, 3, -10),
        "fax CED 2100 Hz, 3.3 s on, 1 s off": cadenced(rate, s, (2100,), 3.3, 1, -10),
    }
    return {
        name: y + rng.normal(0, 32767 * 10 ** (-13 / 20) / np.sqrt(2) * 10 ** (-30 / 20), y.size)
        for name, y in tones.items()
    }


# -- report -------------------------------------------------------------------------------------------


def main() -> None:
    rng = np.random.default_rng(11)
    t0 = time.perf_counter()
    print(
        f"DTMF accuracy: Q.24 categories {REPEATS} x 16 keys, caller-like {CALLER_KEYS} keys, "
        f"{TALK_MINUTES:g} min of speech and of music, {TONE_MINUTES:g} min of each line tone, per rate"
    )
    print("pieces of 20 ms; 'same' = 80 ms, 100 ms and 1 s pieces gave the same events to the sample\n")
    print("| rate | category | keys | exactly once, start within 60 ms | missed | wrong | false | same |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for rate in (8000, 16000):
        rows = [(name, *q24_keys(rate, rng, **kw)) for name, kw in Q24.items()]
        rows += [(name, *callers(rate, rng, impair)) for name, impair in CALLERS.items()]
        for name, x, presses in rows:
            found, same, _ = detect(x, rate)
            s = score(presses, found, rate)
            print(
                f"| {rate} | {name} | {s['keys']} | {s['right']} ({s['right'] / s['keys']:.2%}) | {s['missed']} "
                f"| {s['wrong']} | {s['false']} | {'yes' if same else 'NO'} |"
            )
    print("\n| rate | must raise no key | material | keys raised | same |")
    print("| --- | --- | --- | ---: | --- |")
    for rate in (8000, 16000):
        for name, kw in REJECT.items():
            x, presses = q24_keys(rate, rng, **kw)
            found, same, _ = detect(x, rate)
            print(f"| {rate} | {name} | {len(presses)} tones | {len(found)} | {'yes' if same else 'NO'} |")
        talk = speech_minutes(TALK_MINUTES, rate, rng)
        found, same, spent = detect(talk, rate)
        print(
            f"| {rate} | espeak-ng speech, 8 voices, varied pitch and rate | {talk.size / rate / 60:.0f} min "
            f"| {len(found)} | {'yes' if same else 'NO'} |"
        )
        found, same, _ = detect(music(TALK_MINUTES * 60, rate, seed=5 + rate), rate)
        print(
            f"| {rate} | synthetic harmonic music | {TALK_MINUTES:.0f} min | {len(found)} | {'yes' if same else 'NO'} |"
        )
        for name, y in line_tones(rate, rng).items():
            found, same, _ = detect(y, rate)
            print(f"| {rate} | {name} | {TONE_MINUTES:g} min | {len(found)} | {'yes' if same else 'NO'} |")
        print(
            f"|  | (detection on that speech, 20 ms pieces: {spent / (talk.size / rate) * 3600:.2f} CPU s per hour) |  |  |  |"
        )
    print(f"\ntook {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
