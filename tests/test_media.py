"""Streaming writers and finalising: formats, sizes, digests, trim and rate."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf

from firmware.media.finalize import finalize
from firmware.media.writers import Mp3Writer, WavWriter


def tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    cols = [np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)][:channels]
    return (np.stack(cols, axis=1) * 8000).astype(np.int16)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_written_in_pieces_is_the_whole_signal(tmp_path, rate, channels):
    x = tone(2.3, rate, channels)
    w = WavWriter(tmp_path / "a.wav", rate, channels)
    for i in range(0, len(x), 333):
        w.write(x[i : i + 333])
    done = w.close()
    back, back_rate = sf.read(tmp_path / "a.wav", dtype="int16", always_2d=True)
    assert back_rate == rate and np.array_equal(back, x)
    assert done.size == (tmp_path / "a.wav").stat().st_size and done.sha256 == sha(tmp_path / "a.wav")


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("channels", [1, 2])
def test_mp3_is_cbr_at_32_kbps_per_channel(tmp_path, rate, channels):
    seconds = 10
    w = Mp3Writer(tmp_path / "a.mp3", rate, channels)
    x = tone(seconds, rate, channels)
    for i in range(0, len(x), rate // 50):
        w.write(x[i : i + rate // 50])
    done = w.close()
    info = sf.info(tmp_path / "a.mp3")
    assert (info.samplerate, info.channels) == (rate, channels)
    assert abs(info.duration - seconds) < 0.2
    expected = 32000 * channels * seconds / 8
    assert 0.95 * expected <= done.size <= 1.08 * expected
    assert done.sha256 == sha(tmp_path / "a.mp3") and done.size == (tmp_path / "a.mp3").stat().st_size


def test_finalize_trims_converts_rate_and_removes_the_part(tmp_path):
    rate = 16000
    x = tone(3, rate, 1)
    part = tmp_path / "p.wav"
    sf.write(part, x, rate, subtype="PCM_16")
    done = finalize(part, tmp_path / "f.wav", "wav", 8000, trim=(rate, 2 * rate))
    back, back_rate = sf.read(tmp_path / "f.wav", dtype="int16")
    assert not part.exists() and back_rate == 8000 and abs(len(back) - 8000) <= 2
    assert done.sha256 == sha(tmp_path / "f.wav")


def test_finalize_renames_a_wav_that_needs_nothing(tmp_path):
    x = tone(1, 8000, 2)
    part = tmp_path / "p.wav"
    sf.write(part, x, 8000, subtype="PCM_16")
    before = sha(part)
    done = finalize(part, tmp_path / "f.wav", "wav", 8000)
    assert done.sha256 == before and not part.exists() and done.frames == 8000
