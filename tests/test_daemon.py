"""The daemon end to end: scenarios replayed through simulated capture and gpiozero's mock pins."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.media.synth import dtmf_tone, mix

from .alsa_file import alsa_file_device
from .daemon_run import Box, audio_of, counter_signal, events, positions
from .signals import noise, place, speech, to_int16

RATE = 8000


def test_button_press_starts_and_stops_a_recording(tmp_path):
    box = Box.make(tmp_path, counter_signal(4.0), RATE, sim={"scenario": "1=button, 3=button"})
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    assert (row["status"], row["end_reason"], row["source"]) == ("completed", "button", "button")
    kept = positions(audio_of(row))
    # the press lands within a period (plus the debounce) of its time, and every frame is there once
    assert abs(kept[0] - 1 * RATE) <= 0.1 * RATE and abs(kept[-1] + 1 - 3 * RATE) <= 0.1 * RATE
    np.testing.assert_array_equal(np.diff(kept), 1)
    kinds = [e["type"] for e in result.events if e["type"].startswith("recording.")]
    assert kinds == ["recording.started", "recording.finished"]
    done = result.of("recording.finished")[0]["data"]
    assert done["sha256"] == row["sha256"] and done["duration"] == pytest.approx(len(kept) / RATE)
    assert row["boot_id"] and row["start_monotonic"] > 0


def test_hook_switch_records_the_call_with_pre_roll(tmp_path):
    box = Box.make(
        tmp_path,
        counter_signal(6.0),
        RATE,
        gpio={"hook_switch": 22},
        call={"auto_record": "off-hook", "pre_roll": 0.5, "stop_hold": 0.5},
        sim={"scenario": "2=hook:off, 4=hook:on"},
    )
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    assert (row["source"], row["end_reason"]) == ("auto", "call_end")
    kept = positions(audio_of(row))
    assert abs(kept[0] - 1.5 * RATE) <= 0.15 * RATE  # 0.5 s of pre-roll before going off hook at 2 s
    assert abs(kept[-1] - 4.5 * RATE) <= 0.15 * RATE  # on hook at 4 s plus 0.5 s of stop hold
    np.testing.assert_array_equal(np.diff(kept), 1)


def test_what_the_box_writes_is_not_readable_by_others_however_it_was_started(tmp_path):
    box = Box.make(tmp_path, counter_signal(2.0), RATE, sim={"scenario": "0.5=button, 1.5=button"})
    old = os.umask(0o022)  # a shell's mask, which the daemon inherits
    try:
        assert box.run().code == 0
    finally:
        os.umask(old)
    [row] = box.rows()
    for path in (Path(row["path"]), Path(row["path"]).with_suffix(".json"), tmp_path / "catalog.sqlite3"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, (path, oct(path.stat().st_mode))


def test_a_short_auto_recording_is_discarded(tmp_path):
    box = Box.make(
        tmp_path,
        counter_signal(4.0),
        RATE,
        gpio={"hook_switch": 22},
        call={"auto_record": "off-hook", "pre_roll": 0, "stop_hold": 0, "min_length": 2.0},
        sim={"scenario": "1=hook:off, 2=hook:on"},
    )
    assert box.run().code == 0
    [row] = box.rows()
    assert row["status"] == "absent" and "min_length" in row["error_message"]
    assert not list((tmp_path / "spool").glob("RE*.wav"))


def test_dtmf_sequences_start_and_stop(tmp_path):
    line = to_int16(noise(6.0, RATE, -55))
    for key, at in (("*", 1.0), ("1", 1.3), ("*", 4.0), ("2", 4.3)):
        mix(line, dtmf_tone(key, RATE, seconds=0.08), int(at * RATE))
    box = Box.make(tmp_path, line, RATE, dtmf={"start": "*1", "stop": "*2"})
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    assert (row["source"], row["end_reason"]) == ("dtmf", "stop")
    assert 2.5 < row["duration"] < 3.5
    assert [e["data"]["key"] for e in result.of("dtmf.key")] == ["*", "1", "*", "2"]


def test_a_dtmf_start_begins_where_the_sequence_ended_however_the_loop_batched_the_audio(tmp_path):
    # Unpaced, the loop feeds the core up to 0.5 s at a time and hears the keys at the end of a
    # batch; the recording still begins where the last key's tone ended, not at the batch's end.
    line = to_int16(noise(4.0, RATE, -55))
    for key, at in (("*", 1.0), ("1", 1.3)):
        mix(line, dtmf_tone(key, RATE, seconds=0.08), int(at * RATE))
    box = Box.make(
        tmp_path,
        np.column_stack([line, counter_signal(4.0)]),  # the outbound track says where each frame came from
        RATE,
        audio={"channels": 2},
        dtmf={"start": "*1", "track": "inbound"},
        recording={"channels": "dual"},
    )
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    first = positions(audio_of(row)[:1, 1])[0]
    assert first / RATE == pytest.approx(1.38, abs=0.03)


def test_an_overrun_is_a_gap_of_silence_and_the_timeline_stays_true(tmp_path):
    box = Box.make(
        tmp_path, counter_signal(4.0), RATE, sim={"scenario": "0.5=button, 3.5=button", "faults": "2=overrun:0.25"}
    )
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    frames = audio_of(row)[:, 0]
    silent = np.flatnonzero(frames == 0)
    # 0.25 s of input was lost at 2 s: the file holds that much silence there, and is as long as the span
    assert len(silent) == pytest.approx(0.25 * RATE, abs=2)
    assert abs(silent[0] / RATE + 0.5 - 2.0) < 0.05
    assert len(frames) / RATE == pytest.approx(3.0, abs=0.1)
    assert [e["data"]["code"] for e in result.of("device.error")] == ["overrun"]


def test_a_device_back_within_the_grace_leaves_a_gap(tmp_path):
    box = Box.make(
        tmp_path,
        counter_signal(4.0),
        RATE,
        audio={"reconnect_grace": 5.0},
        sim={"scenario": "0.5=button, 3.5=button", "faults": "2=disconnect:0.4"},
    )
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    assert row["end_reason"] == "button"
    frames = audio_of(row)[:, 0]
    gap = np.count_nonzero(frames == 0) / RATE
    assert 0.35 < gap < 1.5  # the outage as measured on the wall clock, filled with silence
    codes = [e["data"]["code"] for e in result.events if e["type"].startswith("device.")]
    assert "capture_lost" in codes and "capture_back" in codes


def test_digital_silence_is_reported_at_the_level_floor_so_the_state_stays_json(tmp_path):
    box = Box.make(tmp_path, np.zeros(3 * RATE, np.int16), RATE, sim={"faults": "2=overrun:0.1"})
    result = box.run()
    assert result.code == 0, result.stderr
    [state] = [e["data"]["state"] for e in result.events if e["data"].get("code") == "overrun"]
    assert state["input_level"] == -100.0
    json.dumps(state, allow_nan=False)  # -inf would be "-Infinity", which strict JSON readers refuse


def test_a_device_gone_past_the_grace_ends_the_recording_with_an_error(tmp_path):
    box = Box.make(
        tmp_path,
        counter_signal(4.0),
        RATE,
        audio={"reconnect_grace": 0.3},
        sim={"scenario": "0.5=button", "faults": "2=disconnect:1.5"},
    )
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    assert (row["status"], row["state"], row["end_reason"]) == ("failed", "error", "error")
    kept = positions(audio_of(row))
    assert abs(kept[-1] - 2 * RATE) < 0.1 * RATE  # finalised up to the last good sample
    assert "capture_gone" in [e["data"]["code"] for e in result.of("device.error")]


def test_sigterm_finishes_the_recording_as_shutdown(tmp_path):
    box = Box.make(tmp_path, counter_signal(8.0), RATE, sim={"scenario": "0.2=button", "pace": "realtime"})
    proc = box.start()
    started = _wait_for(proc, "recording.started")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert started
    finished = [e for e in events(out) if e["type"] == "recording.finished"]
    assert finished and finished[0]["data"]["end_reason"] == "shutdown"
    [row] = box.rows()
    assert row["end_reason"] == "shutdown" and 0.8 < row["duration"] < 3.0


def test_a_bad_config_exits_78_naming_the_key(tmp_path):
    box = Box.make(tmp_path, counter_signal(1.0), RATE, audio={"period_ms": 100})
    result = box.run()
    assert result.code == 78
    assert "[audio] period_ms = 100" in result.stderr


def test_speech_starts_an_audio_detected_call_and_voice_auto_records(tmp_path):
    talk = speech("Good morning, this is a test of the voice activated recording.", RATE)
    line = noise(6.0, RATE, -60)
    place(line, talk, 1.0, RATE)
    box = Box.make(
        tmp_path,
        to_int16(line),
        RATE,
        call={"detect": "audio", "auto_record": "voice", "pre_roll": 0.3, "idle_timeout": 1.0, "min_length": 0},
    )
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    assert (row["source"], row["end_reason"]) == ("auto", "call_end")
    assert row["duration"] > len(talk) / RATE


def _wait_for(proc, kind: str, timeout: float = 20.0) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return None
        if line.startswith("{") and f'"type": "{kind}"' in line:
            return events(line)[0]
    return None


def test_capture_through_real_alsa_records_the_line_bit_exact(tmp_path):
    # ALSA's own `file` plugin serves the line as a capture PCM: the daemon reads it through pyalsaaudio.
    line = np.stack([counter_signal(3.0), (counter_signal(3.0).astype(np.int32) * -1 - 1).astype(np.int16)], axis=1)
    wav = tmp_path / "alsa-line.wav"
    sf.write(wav, line, RATE, subtype="PCM_16")
    alsa = alsa_file_device(tmp_path, wav)
    box = Box.make(
        tmp_path,
        line,
        RATE,
        audio={"capture": alsa.device, "channels": 2},
        recording={"channels": "dual"},
        sim={"capture": "alsa", "frames": alsa.frames, "scenario": "0.5=button, 2.5=button"},
    )
    result = box.run(env=alsa.env)
    assert result.code == 0, result.stderr
    [row] = box.rows()
    assert (row["channels"], row["end_reason"]) == (2, "button")
    audio = audio_of(row)
    first = int(positions(audio[:1, 0])[0])
    np.testing.assert_array_equal(audio, line[first : first + len(audio)])  # left inbound, right outbound, bit-exact
    assert abs(first - 0.5 * RATE) < 0.1 * RATE and len(audio) == pytest.approx(2.0 * RATE, abs=0.1 * RATE)


def test_sighup_reloads_recording_options_and_keeps_running(tmp_path):
    box = Box.make(tmp_path, counter_signal(8.0), RATE, sim={"pace": "realtime", "scenario": "3=button, 4=button"})
    proc = box.start()
    assert _wait_for(proc, "device.state")  # ready
    box.sections["recording"] = {"format": "mp3", "sample_rate": RATE}
    box.sections["audio"]["period_ms"] = 40  # needs a restart: named, not applied
    box.sections["mqtt"] = {"heartbeat": 5.0}  # so does every section but the reloadable ones
    assert box.config.exists()  # rewrites the file
    proc.send_signal(signal.SIGHUP)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "config reloaded" in err and "[audio], [mqtt] change only at restart" in err
    [row] = box.rows()
    assert row["format"] == "mp3" and row["path"].endswith(".mp3")
    import sqlite3

    db = sqlite3.connect(tmp_path / "catalog.sqlite3")
    [(action, actor, detail)] = db.execute("SELECT action, actor, detail FROM audit").fetchall()
    assert (action, actor) == ("config_reload", "sighup") and "recording" in detail
