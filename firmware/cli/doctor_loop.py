"""The DTMF loop of ``edge-recorder doctor``: what is played, and what the capture heard says.

Theory of operation
-------------------
The loop plays silence, the key ``LOOP_KEY`` and silence on the playback
device and captures exactly as much (``loop_sound``; the playing and capturing
is ``doctor.check_dtmf_loop``'s). ``loop_check`` then feeds what came back to
the core's ``Recorder``, as the daemon does: the key must be heard by the same
detector, on the same tracks. When it is not, ``key_share`` says why: a key
that came back still stands out as two steady tones carrying much of the
energy at their exact frequencies (speech, music and noise do not), so "nothing
came back" (no loop) is told from "came back clipped", "too quiet" or "garbled
on the way". Nothing here does I/O, so each verdict is a test on made-up audio.
"""

from __future__ import annotations

import math

import numpy as np

from ..core import InputLayout, Key, Recorder
from ..core.dtmf import COL_FREQS, KEY_GRID, MIN_TONE_DBFS, ROW_FREQS
from ..media.synth import dtmf_tone
from .checks import FULL_SCALE_SAMPLE, Check, Status, db_text

#: The key the DTMF loop plays: D is on no telephone keypad, so nothing on the line acts on it.
LOOP_KEY = "D"
#: Silence played before the key (the capture starts, the line settles), and the key's length.
LOOP_LEAD_SECONDS = 0.25
LOOP_KEY_SECONDS = 0.15
#: Audio played and captured in all: the key has 0.6 s to come back.
LOOP_SECONDS = 1.0
#: The key came back (heard as a key or not) when its weaker tone carries this share of a window's energy.
LOOP_TONE_SHARE = 0.05


def loop_sound(sample_rate: int, period_frames: int) -> np.ndarray:
    """What the DTMF loop plays: silence, ``LOOP_KEY``, silence; whole capture periods of it.

    >>> sound = loop_sound(8000, 160)
    >>> len(sound), sound.dtype.name, np.flatnonzero(sound)[[0, -1]].tolist()  # the key from 0.25 s to 0.4 s
    (8000, 'int16', [2001, 3199])
    """
    frames = -(-round(LOOP_SECONDS * sample_rate) // period_frames) * period_frames
    sound = np.zeros(frames, np.int16)
    key = dtmf_tone(LOOP_KEY, sample_rate, LOOP_KEY_SECONDS)
    lead = round(LOOP_LEAD_SECONDS * sample_rate)
    sound[lead : lead + len(key)] = np.round(key)
    return sound


def loop_check(heard: np.ndarray, layout: InputLayout, playback: str, labels: list[str]) -> Check:
    """The ``dtmf loop`` check from the frames captured while ``LOOP_KEY`` was played on ``playback``."""
    name = "dtmf loop"
    if len(heard) == 0:
        return Check(name, Status.FAIL, "the capture ended before any audio was read", "give it more audio")
    recorder = Recorder(layout)
    keys = [e for e in recorder.feed(heard) + recorder.close() if isinstance(e, Key)]
    share, levels = key_share(heard, layout.sample_rate, LOOP_KEY)
    played = f"key {LOOP_KEY} played on {playback}"
    best = int(np.argmax(share))
    on = f" on {labels[best]}" if labels[best] else ""
    level = db_text(float(levels[best]))
    clipped = float((np.abs(heard[:, best].astype(np.int32)) >= FULL_SCALE_SAMPLE).mean())
    tracks = list(dict.fromkeys(k.track for k in keys if k.key == LOOP_KEY))
    if tracks:
        where = "the capture" if tracks == ["both"] else f"the {' and '.join(tracks)} track{'s' * (len(tracks) > 1)}"
        detail = f"{played} came back: heard on {where} at {level} dBFS"
        if clipped:  # heard all the same, but the box's beeps and warning tones distort too
            detail += f", clipped ({100 * clipped:.1f} % of samples at full scale)"
            return Check(name, Status.WARN, detail, "level: lower the playback volume or the capture gain (alsamixer)")
        return Check(name, Status.PASS, detail)
    others = sorted({k.key for k in keys})
    if others:  # another key: the line or a device in it made its own tones
        detail = f"{played}: heard key {', '.join(others)} instead"
        return Check(name, Status.FAIL, detail, "something on the line plays its own keys: test with the line idle")
    if share[best] < LOOP_TONE_SHARE:
        detail = f"{played} did not come back: nothing steady at its frequencies"
        hint = (
            "no loop from playback to capture: connect the playback output to the line (or input) the capture "
            "hears, and check neither is muted (alsamixer)"
        )
        if layout.channels == 1:
            hint += "; on a 2-input interface it may come back on the other input: try [audio] channels = 2"
        return Check(name, Status.FAIL, detail, hint)
    if clipped:
        detail = f"{played} came back clipped{on} ({100 * clipped:.1f} % of samples at full scale): no key heard"
        return Check(name, Status.FAIL, detail, "level: lower the playback volume or the capture gain (alsamixer)")
    if levels[best] < MIN_TONE_DBFS:
        detail = f"{played} came back{on} at {level} dBFS, too quiet for the DTMF detector (it needs {MIN_TONE_DBFS:g})"
        return Check(name, Status.FAIL, detail, "level: raise the playback volume or the capture gain (alsamixer)")
    detail = f"{played} came back{on} at {level} dBFS but not as a key the DTMF detector takes"
    hint = "check for noise or distortion on the way; voice processing (echo cancelling) in the interface eats keys"
    return Check(name, Status.FAIL, detail, hint)


def key_share(frames: np.ndarray, sample_rate: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the largest share of a window's energy that the weaker of ``key``'s tones carries, and its level.

    The windows are as long as the key. A key that came back stands out even
    when it is quiet: each of its two steady tones carries up to half of the
    window's energy, while noise, speech and music put well under 1 % at
    exactly those frequencies for that long. The level (dBFS, a sine's peak)
    is the weaker tone's, in the window with the largest share.

    >>> rate = 8000
    >>> sound = np.zeros((rate, 1), np.int16)
    >>> sound[2000:3200, 0] = np.round(dtmf_tone("5", rate, LOOP_KEY_SECONDS, dbfs=-50))
    >>> share, level = key_share(sound, rate, "5")
    >>> round(float(share[0]), 2), round(float(level[0]), 1)
    (0.5, -50.0)
    """
    row = next(i for i, keys in enumerate(KEY_GRID) if key in keys)
    freqs = np.array([ROW_FREQS[row], COL_FREQS[KEY_GRID[row].index(key)]])
    size = round(LOOP_KEY_SECONDS * sample_rate)
    channels = frames.shape[1]
    if len(frames) < size:
        return np.zeros(channels), np.full(channels, -math.inf)
    window = np.hanning(size)
    basis = window[:, None] * np.exp(-2j * np.pi * np.outer(np.arange(size), freqs) / sample_rate)
    starts = np.arange(0, len(frames) - size + 1, round(0.01 * sample_rate))
    blocks = np.stack([frames[s : s + size] for s in starts]).astype(np.float64)  # (window, sample, channel)
    weaker = (2 * np.abs(np.einsum("bnc,nf->bcf", blocks, basis)) / window.sum()).min(axis=2)  # (window, channel)
    energy = np.einsum("n,bnc->bc", window, blocks**2) / window.sum()  # mean square, weighted as the tones are
    share = np.divide(weaker**2 / 2, energy, out=np.zeros_like(energy), where=energy > 0)
    best = share.argmax(axis=0)
    with np.errstate(divide="ignore"):
        level = 20 * np.log10(weaker[best, np.arange(channels)] / 32768.0)
    return share.max(axis=0), level
