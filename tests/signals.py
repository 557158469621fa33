"""Test signals made by the tests: tones, noise, espeak-ng speech, music."""

from __future__ import annotations

import functools

import numpy as np

from firmware.core import Audio, Finished, InputLayout, Key, Recorder, Session
from firmware.media.speech import speak
from firmware.media.synth import dtmf_tone

RNG_SEED = 1234


def silence(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    return np.zeros((round(seconds * rate), channels))


def noise(seconds: float, rate: int, dbfs: float, seed: int = RNG_SEED) -> np.ndarray:
    """White noise with RMS at ``dbfs`` relative to a full-scale sine."""
    rms = 32767 * 10 ** (dbfs / 20) / np.sqrt(2)
    return np.random.default_rng(seed).normal(0, rms, round(seconds * rate))


def key(k: str, rate: int, seconds: float = 0.1, **kw) -> np.ndarray:
    return dtmf_tone(k, rate, seconds, **kw)


@functools.cache
def _speech(text: str, rate: int, voice: str, pitch: int) -> np.ndarray:
    return speak(text, rate, voice=voice, pitch=pitch)


def speech(text: str, rate: int, voice: str = "en-us", pitch: int = 50) -> np.ndarray:
    return _speech(text, rate, voice, pitch).copy()


def music(seconds: float, rate: int, seed: int = RNG_SEED) -> np.ndarray:
    """Piano-like chords and a melody: harmonic notes from the equal-tempered scale."""
    rng = np.random.default_rng(seed)
    out = np.zeros(round(seconds * rate))
    t_note = 0
    while t_note < out.size:
        length = int(rng.uniform(0.15, 0.6) * rate)
        t = np.arange(length) / rate
        env = np.exp(-t * rng.uniform(2, 6))
        for semitone in rng.choice(np.arange(-12, 24), size=rng.integers(1, 4), replace=False):
            f0 = 440 * 2 ** (semitone / 12)
            note = sum((0.6**h) * np.sin(2 * np.pi * f0 * (h + 1) * t) for h in range(6) if f0 * (h + 1) < rate / 2)
            seg = out[t_note : t_note + length]
            seg += (note * env * 4000)[: seg.size]
        t_note += length
    return out


def first_sound(x: np.ndarray, share: float = 0.02) -> int:
    """Index of the first sample above ``share`` of the peak."""
    return int(np.flatnonzero(np.abs(x) > share * np.max(np.abs(x)))[0])


def last_sound(x: np.ndarray, share: float = 0.02) -> int:
    """Index after the last sample above ``share`` of the peak."""
    return int(np.flatnonzero(np.abs(x) > share * np.max(np.abs(x)))[-1]) + 1


def place(track: np.ndarray, signal: np.ndarray, at_seconds: float, rate: int) -> int:
    """Add ``signal`` into 1-D ``track`` at a time; return the sample index."""
    at = round(at_seconds * rate)
    end = min(track.size, at + signal.size)
    track[at:end] += signal[: end - at]
    return at


def to_int16(*tracks: np.ndarray) -> np.ndarray:
    """Stack float tracks into int16 frames (n, channels)."""
    n = max(t.size for t in tracks)
    out = np.zeros((n, len(tracks)))
    for i, t in enumerate(tracks):
        out[: t.size, i] = t
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


class Run:
    """Drive a Recorder (or, given ``rules``, a Session) with frames in pieces; keep the events and each
    file's audio."""

    def __init__(self, rate: int = 16000, channels: int = 1, rules=None, **kw) -> None:
        self.rate = rate
        layout = InputLayout(rate, channels)
        if rules is None:
            self.core = Recorder(layout, **kw)
        else:
            self.core = Session(layout, options=kw.get("button_options"), rules=rules)
        self.events: list = []
        self.audio: dict[str, list[np.ndarray]] = {}

    def send(self, control):
        self._take(self.core.send(control))
        return self

    def feed(self, frames: np.ndarray, piece: float = 0.02):
        size = max(1, round(piece * self.rate))
        for i in range(0, len(frames), size):
            self._take(self.core.feed(frames[i : i + size]))
        return self

    def close(self, *args):
        self._take(self.core.close(*args))
        return self

    def _take(self, events) -> None:
        for e in events:
            if isinstance(e, Audio):
                self.audio.setdefault(e.recording.id, []).append(e.frames)
            else:
                self.events.append(e)

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def finished(self) -> list[Finished]:
        return self.of(Finished)

    @property
    def keys(self) -> list[Key]:
        return self.of(Key)

    def file(self, recording_id: str | None = None) -> np.ndarray:
        rid = recording_id or self.finished[0].recording.id
        parts = self.audio.get(rid, [])
        return np.concatenate(parts) if parts else np.zeros((0, 1), np.int16)


# -- caller-like DTMF material (tests/test_dtmf.py and bench/dtmf_accuracy.py) ---------------------


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of pink noise (power falling 3 dB an octave, 1/f, from the lowest
    frequency ``n`` samples hold) with an RMS of 1: white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    spectrum[0] = 0
    spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
    y = np.fft.irfft(spectrum, n)
    return y / np.sqrt(np.mean(y**2))


def mulaw(x: np.ndarray) -> np.ndarray:
    """``x`` (int16 scale) through ITU-T G.711 mu-law and back: each sample's 8-bit code
    (sign, 3-bit segment, 4-bit step, on the 14-bit magnitude) decoded to the middle of its step."""
    v = np.clip(np.round(x), -32768, 32767).astype(np.int64)
    magnitude = np.minimum(np.abs(v), 32635) + 0x84
    segment = np.floor(np.log2(magnitude)).astype(np.int64) - 7
    step = (magnitude >> (segment + 3)) & 0x0F
    decoded = (((step << 3) + 0x84) << segment) - 0x84
    return np.where(v < 0, -decoded, decoded).astype(np.float64)


def active_power(x: np.ndarray, rate: int) -> float:
    """Active speech power, simplified from ITU-T P.56: the mean power of the 10 ms frames
    no more than 15.9 dB below that mean."""
    frame = rate // 100
    power = np.mean(x[: x.size // frame * frame].reshape(-1, frame) ** 2, axis=1)
    level = float(np.mean(power))
    for _ in range(20):
        level = float(np.mean(power[power >= level * 10 ** (-15.9 / 10)]))
    return level


def caller_keys(
    rate: int,
    rng: np.random.Generator,
    count: int,
    *,
    seconds: tuple[float, float] = (0.05, 0.25),
    gaps: tuple[float, float] = (0.05, 0.5),
    dbfs: tuple[float, float] = (-25.0, -8.0),
    twist: tuple[float, float] = (-5.0, 3.0),
    deviation: tuple[float, float] = (-0.01, 0.01),
    repeats: float = 0.5,
) -> tuple[np.ndarray, list[tuple[str, int, int]], float]:
    """``count`` keys as a caller presses them, after a gap: each tone and gap drawn from
    ``seconds`` and ``gaps``, one level per caller (``dbfs`` per tone, +-1 dB a key), and per key
    a twist and a frequency error. A share ``repeats`` of the keys repeat a key: half the one
    just pressed (``11``), half the one before it (``545``).

    Returns the signal, the presses as ``(key, first sample, end sample)``, and the power of a
    key at the caller's level (both tones, no twist), to set noise and speech against.
    """
    from firmware.core.dtmf import KEYS

    level = rng.uniform(*dbfs)
    parts = [np.zeros(round(rng.uniform(*gaps) * rate))]
    at = parts[0].size
    presses: list[tuple[str, int, int]] = []
    for i in range(count):
        u = rng.uniform()
        if i >= 1 and u < repeats / 2:
            k = presses[-1][0]
        elif i >= 2 and u < repeats:
            k = presses[-2][0]
        else:
            k = KEYS[rng.integers(len(KEYS))]
        tone = dtmf_tone(
            k, rate, rng.uniform(*seconds), level + rng.uniform(-1, 1), rng.uniform(*twist), rng.uniform(*deviation)
        )
        gap = np.zeros(round(rng.uniform(*gaps) * rate))
        presses.append((k, at, at + tone.size))
        parts += [tone, gap]
        at += tone.size + gap.size
    return np.concatenate(parts), presses, (32767 * 10 ** (level / 20)) ** 2
