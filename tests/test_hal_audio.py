"""hal.audio: capture and playback through real ALSA (its file plugin, no sound card
needed), the WAV twins, injected faults, the device list and ``edge-recorder devices``."""

from __future__ import annotations

import argparse
import errno
import json
import math
import subprocess
import sys
import threading
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf

from firmware.cli import devices as devices_cmd
from hal.audio import (
    AlsaCapture,
    AlsaPlayback,
    AudioFileError,
    Chunk,
    DeviceLost,
    Devices,
    DeviceUnavailable,
    Disconnect,
    FaultyCapture,
    LossEstimator,
    Overrun,
    Pcm,
    UnsupportedFormat,
    WavCapture,
    WavPlayback,
    level_dbfs,
    list_devices,
)
from hal.audio import alsa as hal_alsa
from tests.alsa_file import alsa_file_device


def counter_signal(frames: int, rate: int, channels: int) -> np.ndarray:
    """Channel 0 counts samples (wrapping at 16 bits), channel 1 is a 440 Hz sine: every frame is unique."""
    counter = (np.arange(frames) % 65536 - 32768).astype(np.int16)
    if channels == 1:
        return counter.reshape(-1, 1)
    sine = (12000 * np.sin(2 * np.pi * 440 * np.arange(frames) / rate)).astype(np.int16)
    return np.stack([counter, sine], axis=1)


def write_wav(path, frames: np.ndarray, rate: int):
    sf.write(path, frames, rate, subtype="PCM_16")
    return path


def read_all(capture) -> tuple[np.ndarray, list[Chunk]]:
    chunks = []
    while (chunk := capture.read()) is not None:
        chunks.append(chunk)
    return np.concatenate([c.frames for c in chunks]), chunks


# -- real ALSA: the file plugin ------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("channels", [1, 2])
def test_alsa_capture_returns_the_file_bit_exact(tmp_path, monkeypatch, rate, channels):
    signal = counter_signal(round(1.5 * rate) + 7, rate, channels)
    alsa = alsa_file_device(tmp_path, write_wav(tmp_path / "line.wav", signal, rate))
    monkeypatch.setenv("ALSA_CONFIG_PATH", alsa.env["ALSA_CONFIG_PATH"])
    assert alsa.frames == len(signal)

    capture = AlsaCapture(alsa.device, rate, channels, period_ms=20, limit_frames=alsa.frames)
    capture.open()
    try:
        got, chunks = read_all(capture)
    finally:
        capture.close()

    assert got.dtype == np.int16 and got.shape == signal.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, signal)
    period = rate // 50
    assert capture.period_frames == period
    assert [len(c.frames) for c in chunks[:-1]] == [period] * (len(chunks) - 1)
    assert len(chunks[-1].frames) == len(signal) % period
    assert all(c.gap == 0 for c in chunks) and capture.overruns == 0


def test_alsa_capture_can_be_reopened_and_goes_on(tmp_path, monkeypatch):
    signal = counter_signal(1600, 8000, 1)
    alsa = alsa_file_device(tmp_path, write_wav(tmp_path / "line.wav", signal, 8000))
    monkeypatch.setenv("ALSA_CONFIG_PATH", alsa.env["ALSA_CONFIG_PATH"])
    capture = AlsaCapture(alsa.device, 8000, 1, limit_frames=alsa.frames)
    capture.open()
    first = capture.read()
    capture.open()  # a second open closes and reopens (the file plugin starts its file again)
    again = capture.read()
    capture.close()
    np.testing.assert_array_equal(first.frames, signal[:160])
    np.testing.assert_array_equal(again.frames, signal[:160])


def test_the_alsa_file_device_works_in_a_subprocess(tmp_path):
    signal = counter_signal(4000, 16000, 2)
    alsa = alsa_file_device(tmp_path, write_wav(tmp_path / "line.wav", signal, 16000))
    code = (
        "import sys, numpy as np\n"
        "from hal.audio import AlsaCapture\n"
        f"c = AlsaCapture({alsa.device!r}, 16000, 2, limit_frames={alsa.frames})\n"
        "c.open(); parts = []\n"
        "while (chunk := c.read()) is not None: parts.append(chunk.frames)\n"
        "sys.stdout.buffer.write(np.concatenate(parts).tobytes())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=alsa.env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    np.testing.assert_array_equal(np.frombuffer(result.stdout, np.int16).reshape(-1, 2), signal)


def test_alsa_playback_writes_the_tones_bit_exact(tmp_path, monkeypatch):
    played = tmp_path / "played.raw"
    conf = tmp_path / "out.conf"
    conf.write_text(
        f'</usr/share/alsa/alsa.conf>\npcm.edgeout {{ type file; slave.pcm "null"; file "{played}"; format "raw" }}\n'
    )
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    beep = (8000 * np.sin(2 * np.pi * 1000 * np.arange(4000) / 8000)).astype(np.int16)
    speaker = AlsaPlayback("edgeout", 8000)
    speaker.open()
    speaker.play(beep)
    speaker.play(beep[:333].reshape(-1, 1))
    speaker.close()  # lets the writer finish the queued tones
    got = np.fromfile(played, "<i2")
    np.testing.assert_array_equal(got[:4333], np.concatenate([beep, beep[:333]]))


@pytest.mark.parametrize("device_class", [AlsaCapture, AlsaPlayback])
def test_opening_a_device_that_does_not_exist_names_it(device_class):
    args = (16000, 1) if device_class is AlsaCapture else (16000,)
    device = device_class("edge-recorder-no-such-pcm", *args)
    with pytest.raises(DeviceUnavailable, match=r"edge-recorder-no-such-pcm.*No such file or directory"):
        device.open()


# -- AlsaCapture's own logic, on a scripted PCM -----------------------------------------------------------


class ScriptedPcm:
    """Stands in for ``alsaaudio.PCM``: each read is (seconds it blocks, result or exception)."""

    script: ClassVar[list] = []
    info_overrides: ClassVar[dict] = {}
    written: ClassVar[list[bytes]] = []

    def __init__(self, kind, mode, *, device, rate, channels, format, periodsize, periods):
        self.device, self.rate, self.channels, self.periodsize = device, rate, channels, periodsize

    def info(self):
        return (
            {"format_name": "S16_LE", "rate": self.rate, "channels": self.channels}
            | {"period_size": self.periodsize}
            | self.info_overrides
        )

    def read(self):
        seconds, result = ScriptedPcm.script.pop(0)
        Clock.now += seconds
        if isinstance(result, Exception):
            raise result
        if result < 0:
            return result, b""
        return result, np.zeros(result * self.channels, "<i2").tobytes()

    def write(self, data):
        ScriptedPcm.written.append(bytes(data))
        return len(data) // (2 * self.channels)

    def drain(self):
        pass

    def close(self):
        pass


class Clock:
    now = 0.0

    @classmethod
    def read(cls) -> float:
        return cls.now


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(hal_alsa.alsaaudio, "PCM", ScriptedPcm)
    Clock.now = 0.0
    ScriptedPcm.script, ScriptedPcm.info_overrides, ScriptedPcm.written = [], {}, []
    return ScriptedPcm


def test_an_overrun_is_counted_and_its_lost_frames_estimated_from_the_clock(scripted):
    scripted.script = [
        (0.02, 320),  # waited for a period: caught up with the device at t=0.04 ...
        (0.02, 320),
        (0.0, 320),  # ... then the daemon stalled for 0.5 s: a buffered period, then the overrun
        (0.0, -errno.EPIPE),
        (0.02, 320),
    ]
    capture = AlsaCapture("hw:9", 16000, 1, clock=Clock.read)
    capture.open()
    assert [capture.read().gap for _ in range(2)] == [0, 0]
    Clock.now += 0.5
    assert capture.read().gap == 0
    chunk = capture.read()
    assert capture.overruns == 1
    # 0.5 s of audio (8000 frames) since the anchor, of which one period was delivered
    assert chunk.gap == 8000 - 320 and len(chunk.frames) == 320


def test_the_overrun_estimate_is_not_thrown_off_by_the_sound_cards_clock_drift():
    rate, period = 16000, 320
    estimator = LossEstimator(rate, period)
    t = 0.0
    for _ in range(180_000):  # an hour of periods from a sound card running 100 ppm slow
        estimator.read_started(t)
        t += period / rate * 1.0001
        estimator.read_done(period, t - period / rate, t)
    assert estimator.overrun(t + 0.25) == 4000  # a 250 ms stall, not 250 ms plus 0.36 s of drift


def test_a_read_error_means_the_device_is_lost_and_it_can_be_reopened(scripted):
    scripted.script = [(0.02, 320), (0.0, hal_alsa.alsaaudio.ALSAAudioError("No such device [hw:9]")), (0.02, 320)]
    capture = AlsaCapture("hw:9", 16000, 1, clock=Clock.read)
    capture.open()
    capture.read()
    with pytest.raises(DeviceLost, match=r"'hw:9': No such device$"):
        capture.read()
    capture.open()
    assert len(capture.read().frames) == 320


def test_a_device_that_cannot_give_the_rate_is_unsupported_not_just_busy(scripted):
    scripted.info_overrides = {"rate": 48000}
    with pytest.raises(UnsupportedFormat, match=r"runs at 48000 Hz, not 16000 Hz; use its plughw: name"):
        AlsaCapture("hw:9", 16000, 1).open()


def test_playback_returns_at_once_while_the_device_is_still_writing(scripted, monkeypatch):
    release = threading.Event()
    writing = threading.Event()

    def slow_write(self, data):
        writing.set()
        release.wait(5)
        ScriptedPcm.written.append(bytes(data))
        return len(data) // (2 * self.channels)

    monkeypatch.setattr(ScriptedPcm, "write", slow_write)
    scripted.info_overrides = {"channels": 2}  # a device that only plays stereo
    speaker = AlsaPlayback("hw:9", 16000)
    speaker.open()
    speaker.play(np.arange(5, dtype=np.int16))
    assert writing.wait(5)  # play() returned while the write still blocks
    release.set()
    speaker.close()
    assert np.frombuffer(ScriptedPcm.written[0], "<i2").tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_playback_refuses_what_is_not_int16_mono(tmp_path):
    speaker = WavPlayback(tmp_path / "tones.wav", 8000)
    speaker.open()
    with pytest.raises(TypeError, match="int16"):
        speaker.play(np.zeros(10))
    with pytest.raises(ValueError, match=r"mono.*\(10, 2\)"):
        speaker.play(np.zeros((10, 2), np.int16))
    speaker.close()


# -- the WAV twins ---------------------------------------------------------------------------------------


def test_wav_capture_serves_the_file_in_periods(tmp_path):
    signal = counter_signal(16000 + 100, 16000, 2)
    line = WavCapture(write_wav(tmp_path / "line.wav", signal, 16000), period_ms=40)
    assert (line.sample_rate, line.channels, line.period_frames, line.frames) == (16000, 2, 640, 16100)
    line.open()
    got, chunks = read_all(line)
    line.close()
    np.testing.assert_array_equal(got, signal)
    assert [len(c.frames) for c in chunks] == [640] * 25 + [100]


def test_wav_capture_paced_delivers_each_period_at_its_real_time(tmp_path):
    now = [100.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    line = WavCapture(write_wav(tmp_path / "line.wav", counter_signal(800, 8000, 1), 8000), 20, pace=True,
                      clock=lambda: now[0], sleep=sleep)  # fmt: skip
    line.open()
    arrivals = []
    while line.read() is not None:
        arrivals.append(round(now[0] - 100.0, 6))
        now[0] += 0.003  # the daemon's work on each period
    assert arrivals == [0.02, 0.04, 0.06, 0.08, 0.1]
    assert all(s == pytest.approx(0.017) for s in sleeps[1:])


def test_wav_capture_reopened_resumes_where_it_was(tmp_path):
    signal = counter_signal(1000, 8000, 1)
    line = WavCapture(write_wav(tmp_path / "line.wav", signal, 8000), 20)
    line.open()
    line.read()
    line.close()
    line.open()
    np.testing.assert_array_equal(line.read().frames, signal[160:320])
    line.close()


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("not audio"), "not a readable audio file"),
        (
            lambda p: sf.write(p, np.zeros(100, np.int16), 44100),
            "is 44100 Hz; the capture twin serves 8000 or 16000 Hz",
        ),
        (lambda p: sf.write(p, np.zeros((100, 3), np.int16), 16000), "has 3 channels; 1 or 2 are supported"),
    ],
)
def test_wav_capture_names_the_file_and_its_problem(tmp_path, make, problem):
    path = tmp_path / "input.wav"
    make(path)
    with pytest.raises(AudioFileError, match=problem) as caught:
        WavCapture(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, DeviceUnavailable) and isinstance(caught.value, ValueError)


def test_wav_playback_keeps_every_tone_and_goes_on_after_a_reopen(tmp_path):
    path = tmp_path / "tones.wav"
    speaker = WavPlayback(path, 16000)
    speaker.open()
    speaker.play(np.full(100, 1000, np.int16))
    speaker.close()
    speaker.open()
    speaker.play(np.full((50, 1), -7, np.int16))
    speaker.close()
    audio, rate = sf.read(path, dtype="int16")
    assert rate == 16000 and sf.info(path).subtype == "PCM_16"
    assert audio.tolist() == [1000] * 100 + [-7] * 50


# -- injected faults --------------------------------------------------------------------------------------


def test_an_injected_overrun_drops_frames_and_reports_the_gap(tmp_path):
    signal = counter_signal(8000, 8000, 1)
    line = WavCapture(write_wav(tmp_path / "line.wav", signal, 8000), 20)
    capture = FaultyCapture(line, [Overrun(at_frame=1000, lost_frames=250)])
    capture.open()
    got, chunks = read_all(capture)
    assert capture.overruns == 1
    np.testing.assert_array_equal(got, np.concatenate([signal[:1000], signal[1250:]]))
    gaps = [(sum(len(c.frames) for c in chunks[:i]), c.gap) for i, c in enumerate(chunks) if c.gap]
    assert gaps == [(1000, 250)]


def test_an_injected_disconnect_loses_the_device_until_it_is_back(tmp_path):
    rate = 8000
    signal = counter_signal(4 * rate, rate, 1)
    now = [0.0]
    line = WavCapture(write_wav(tmp_path / "line.wav", signal, rate), 20)
    capture = FaultyCapture(line, [Disconnect(at_frame=rate, seconds=1.5)], clock=lambda: now[0])
    capture.open()
    before = []
    with pytest.raises(DeviceLost, match="disconnect"):
        while True:
            before.append(capture.read().frames)
    np.testing.assert_array_equal(np.concatenate(before), signal[:rate])
    capture.close()
    now[0] = 1.0
    with pytest.raises(DeviceUnavailable, match=r"back in 0\.5 s"):
        capture.open()
    now[0] = 1.75  # reopened 1.75 s after the loss: that much of the line is not replayed
    capture.open()
    after, _ = read_all(capture)
    np.testing.assert_array_equal(after, signal[rate + round(1.75 * rate) :])


# -- the device list and ``edge-recorder devices`` -------------------------------------------------------


def test_list_devices_lists_what_alsa_defines_even_without_a_sound_card(tmp_path, monkeypatch):
    alsa = alsa_file_device(tmp_path, write_wav(tmp_path / "call.wav", counter_signal(100, 8000, 1), 8000))
    monkeypatch.setenv("ALSA_CONFIG_PATH", alsa.env["ALSA_CONFIG_PATH"])
    devices = list_devices()
    names = {p.name: p.description for p in devices.capture}
    assert names["edgefile"] == "edge-recorder test audio from call.wav (8000 Hz, 1 ch)"
    assert "null" in {p.name for p in devices.playback}
    assert all(isinstance(i, int) and isinstance(c, str) for i, c, _ in devices.cards)


def test_devices_command_prints_json(tmp_path, monkeypatch, capsys):
    alsa = alsa_file_device(tmp_path, write_wav(tmp_path / "call.wav", counter_signal(100, 8000, 1), 8000))
    monkeypatch.setenv("ALSA_CONFIG_PATH", alsa.env["ALSA_CONFIG_PATH"])
    assert devices_cmd.run(argparse.Namespace(json=True)) == 0
    listing = json.loads(capsys.readouterr().out)
    assert set(listing) == {"cards", "capture", "playback"}
    assert {"name": "edgefile", "description": "edge-recorder test audio from call.wav (8000 Hz, 1 ch)"} in listing[
        "capture"
    ]


def test_devices_command_prints_a_table_and_says_when_there_is_no_card(monkeypatch, capsys):
    listing = Devices([Pcm("null", "Discard all samples")], [Pcm("null", "Discard all samples")], [])
    monkeypatch.setattr(devices_cmd, "list_devices", lambda: listing)
    assert devices_cmd.run(argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert "no sound cards found" in out and "Capture PCMs" in out and "Playback PCMs" in out

    listing.cards.append((1, "Device", "USB Audio Device at usb-0000:01:00.0-1.4, full speed"))
    devices_cmd.run(argparse.Namespace(json=False))
    assert " 1  Device            USB Audio Device at usb" in capsys.readouterr().out


def test_devices_subcommand_parses_json_flag():
    parser = argparse.ArgumentParser()
    devices_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["devices", "--json"])
    assert args.json is True and args.run is devices_cmd.run


# -- level -----------------------------------------------------------------------------------------------


def test_level_dbfs_reads_a_full_scale_sine_at_minus_3_db_and_silence_as_minus_infinity():
    t = np.arange(16000) / 16000
    sine = (32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    assert level_dbfs(sine) == pytest.approx(-3.01, abs=0.01)
    assert level_dbfs(np.stack([sine, sine], axis=1)) == pytest.approx(-3.01, abs=0.01)
    assert level_dbfs((sine // 10).reshape(-1, 1)) == pytest.approx(-23.01, abs=0.02)
    assert level_dbfs(np.zeros((0, 2), np.int16)) == -math.inf


# -- the daemon's capture thread: blocks at real time, a period at once when the loop wants it -------------


def _drain(thread, until):
    """Items from the capture thread's queue until ``until(items)``, or 5 s."""
    import contextlib
    import queue as queues
    import time

    items, deadline = [], time.monotonic() + 5
    while not until(items) and time.monotonic() < deadline:
        with contextlib.suppress(queues.Empty):
            items.append(thread.queue.get(timeout=0.1))
    return items


def test_the_capture_thread_hands_over_blocks_and_each_period_when_urgent(tmp_path):
    """At real time the loop wakes once a block (four 20 ms periods here), not once a period; when it has
    something to land at a sample it gets each period at once. Every frame arrives once, in order, and a
    gap (an overrun) comes after what was read before it, never merged into a block."""
    from firmware.daemon.capture import CaptureThread, Ended

    rate = 8000
    signal = counter_signal(2 * rate, rate, 1)
    line = WavCapture(write_wav(tmp_path / "line.wav", signal, rate), 20)
    capture = FaultyCapture(line, [Overrun(at_frame=rate, lost_frames=160)])
    urgent_from = round(1.5 * rate)  # from 1.5 s on, the loop "has a control waiting"
    thread = CaptureThread(capture, 2.0, lossless=True, block_frames=4 * 160, urgent=lambda n: n >= urgent_from)
    capture.open()
    thread.start()
    try:
        items = _drain(thread, lambda got: got and isinstance(got[-1], Ended))
    finally:
        thread.stop()
    chunks = [i for i in items if isinstance(i, Chunk)]
    sizes = [len(c.frames) for c in chunks]
    assert isinstance(items[-1], Ended)
    np.testing.assert_array_equal(
        np.concatenate([c.frames for c in chunks]), np.concatenate([signal[:rate], signal[rate + 160 :]])
    )
    [gap_at] = [i for i, c in enumerate(chunks) if c.gap]
    assert chunks[gap_at].gap == 160 and sizes[gap_at] == 160, "the gap's period alone"
    assert sum(sizes[:gap_at]) == rate and all(s == 640 for s in sizes[: gap_at - 1]), "blocks up to the gap"
    at, urgent = 0, []
    for chunk in chunks:
        at += chunk.gap + len(chunk.frames)
        if at > urgent_from + 160:
            urgent.append(len(chunk.frames))
    assert urgent and set(urgent) == {160}, "once urgent, each period as it comes"
