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
