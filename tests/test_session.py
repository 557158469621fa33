"""The recording session: key sequences, calls and min_length in the core, sample-exact and the same
whatever the size of the pieces the audio comes in."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.core import (
    CallEnded,
    CallStarted,
    EndReason,
    Hook,
    Pause,
    PauseBehavior,
    Paused,
    RecordingOptions,
    Resume,
    Resumed,
    SessionRules,
    Start,
    Started,
    Status,
)
from firmware.core.dtmf import DtmfDetector
from firmware.core.engine import KEY_GUARD_SECONDS

from . import signals as sig
from .daemon_run import counter_signal, positions

R = 8000
SEQUENCES = {"start": "*1", "stop": "*2", "pause": "*3", "resume": "*4"}
PIECES = (0.02, 0.137, 0.5)
GUARD = round(KEY_GUARD_SECONDS * R)


def line(seconds: float, keys: list[tuple[str, float]], tone: float = 0.08) -> np.ndarray:
    """Two channels: inbound is quiet noise with DTMF keys at the given times, outbound a counter that
    says where each recorded frame came from."""
    inbound = sig.noise(seconds, R, -55)
    for k, at in keys:
        sig.place(inbound, sig.key(k, R, tone), at, R)
    return np.column_stack([sig.to_int16(inbound)[:, 0], counter_signal(seconds, R)])


def rules(**kw) -> SessionRules:
    return SessionRules(**{"sequences": SEQUENCES, "sequence_track": "inbound", **kw})


def dual() -> RecordingOptions:
    return RecordingOptions.from_mapping({"channels": "dual", "format": "wav", "sample_rate": R})


def keys_in(audio: np.ndarray) -> list[str]:
    """The DTMF keys a detector hears in a recording's inbound channel."""
    detector = DtmfDetector(R)
    found = detector.process(audio[:, 0]) + detector.flush()
    return [k.key for k in found if type(k).__name__ == "KeyUp"]


def run(frames: np.ndarray, piece: float, session_rules: SessionRules, *controls) -> sig.Run:
    r = sig.Run(R, 2, rules=session_rules, button_options=dual())
    for control in controls:
        r.send(control)
    return r.feed(frames, piece=piece).close()


@pytest.mark.parametrize("piece", PIECES)
@pytest.mark.parametrize(("keys", "stop"), [("*2", 0.3), ("*2", 1.0), ("#", None)])
def test_a_stop_sequence_ends_the_recording_at_its_first_keys_onset(piece, keys, stop):
    # The case: a recording started at 1.04 s, the stop keys at 3.0 s and 3.3 s (or 1 s apart,
    # or the one-key sequence "#"): the file holds 1.04 s up to 3.0 s, no tone, and its duration says so.
    pressed = [(keys[0], 3.0)] + ([(keys[1], 3.0 + stop)] if stop else [])
    frames = line(6.0, pressed)
    r = run(frames, piece, rules(sequences={"stop": keys}), Start(dual(), "api", at=round(1.04 * R)))
    [done] = r.finished
    onset = r.keys[0].start  # where the detector places the tone's onset, to about a millisecond
    assert abs(onset - 3 * R) <= R // 1000
    kept = positions(r.file()[:, 1])
    assert (kept[0], kept[-1] + 1) == (round(1.04 * R), onset)
    np.testing.assert_array_equal(np.diff(kept), 1)
    assert (done.end_reason, done.at, done.frames) == (EndReason.STOP, onset, len(kept))
    assert done.duration == len(kept) / R
    assert keys_in(r.file()) == []


@pytest.mark.parametrize("piece", PIECES)
def test_pause_acts_at_its_first_key_and_resume_after_its_last(piece):
    frames = line(7.0, [("*", 1.0), ("1", 1.3), ("*", 2.0), ("3", 2.3), ("*", 3.5), ("4", 3.8), ("*", 5.0), ("2", 5.3)])
    r = run(frames, piece, rules())
    [started], [paused], [resumed], [done] = r.of(Started), r.of(Paused), r.of(Resumed), r.finished
    audio = r.file()
    counter = audio[:, 1]
    keys = r.keys
    assert [k.key for k in keys] == list("*1*3*4*2")
    for key, at in zip(keys, (1.0, 1.3, 2.0, 2.3, 3.5, 3.8, 5.0, 5.3), strict=True):
        assert abs(key.start - at * R) <= R // 1000 and abs(key.end - (at + 0.08) * R) <= R // 1000
    assert started.at == keys[1].end + GUARD  # just after the start keys' last tone
    assert (paused.at, resumed.at, done.at) == (keys[2].start, keys[5].end + GUARD, keys[6].start)
    paused_from = paused.at - started.at
    resumed_from = paused_from + resumed.at - paused.at  # the paused span is silence, as long as it lasted
    np.testing.assert_array_equal(positions(counter[:paused_from]), np.arange(started.at, paused.at))
    assert not audio[paused_from:resumed_from].any()
    np.testing.assert_array_equal(positions(counter[resumed_from:]), np.arange(resumed.at, done.at))
    assert done.frames == len(audio) and keys_in(audio) == []


def test_a_sequence_that_is_not_completed_leaves_its_keys_in_the_file():
    frames = line(5.0, [("*", 2.0), ("9", 2.3)])  # "*" begins every sequence, "*9" is none of them
    r = run(frames, 0.02, rules(), Start(dual(), "api"))
    assert keys_in(r.file()) == ["*", "9"]
    assert len(r.file()) == 5 * R


def test_a_paused_recording_ignores_the_pause_sequence_and_a_recording_one_the_resume_sequence():
    frames = line(5.0, [("*", 1.0), ("4", 1.3), ("*", 3.0), ("3", 3.3), ("*", 4.0), ("3", 4.3)])
    r = run(frames, 0.02, rules(), Start(dual(), "api"))
    assert [type(e).__name__ for e in r.events if isinstance(e, Paused | Resumed)] == ["Paused"]


@pytest.mark.parametrize("piece", PIECES)
def test_a_hook_call_ends_on_the_same_sample_however_the_audio_is_fed(piece):
    frames = line(6.0, [])
    r = run(
        frames,
        piece,
        rules(sequences={}, detect="hook", auto_record="off-hook", stop_hold=0.5, call_pre_roll=0.25),
        Hook(True, at=1 * R),
        Hook(False, at=4 * R),
    )
    [done] = r.finished
    kept = positions(r.file()[:, 1])
    assert (kept[0], kept[-1] + 1) == (round(0.75 * R), round(4.5 * R))
    assert (done.recording.source, done.end_reason) == ("auto", EndReason.CALL_END)
    [call] = r.of(CallStarted)
    assert r.of(CallEnded)[0].call_id == call.call_id == done.recording.call_id


def test_speech_starts_and_idleness_ends_an_audio_detected_call_on_the_same_samples_for_any_piece_size():
    talk = sig.speech("Good morning, this is a test of the voice activated recording.", R)
    inbound = sig.noise(8.0, R, -60)
    sig.place(inbound, talk, 1.0, R)
    frames = np.column_stack([sig.to_int16(inbound)[:, 0], counter_signal(8.0, R)])
    spans = set()
    for piece in PIECES:
        r = run(frames, piece, rules(sequences={}, detect="audio", auto_record="voice", idle_timeout=1.0))
        [done] = r.finished
        kept = positions(r.file()[:, 1])
        spans.add((int(kept[0]), int(kept[-1]) + 1, done.end_reason))
    [(first, end, reason)] = spans
    assert reason is EndReason.CALL_END
    assert first < 1.2 * R and end > (1.0 + len(talk) / R + 1.0 - 0.3) * R


def test_an_automatic_recording_shorter_than_min_length_ends_absent():
    frames = line(4.0, [])
    r = run(
        frames,
        0.02,
        rules(sequences={}, detect="hook", auto_record="off-hook", stop_hold=0, call_pre_roll=0, min_length=2.0),
        Hook(True, at=1 * R),
        Hook(False, at=2 * R),
    )
    [done] = r.finished
    assert done.status is Status.ABSENT and "min_length" in done.discarded
    assert done.end_reason is EndReason.CALL_END


def test_no_recording_starts_while_starts_are_refused():
    frames = line(3.0, [("*", 1.0), ("1", 1.3)])
    r = sig.Run(R, 2, rules=rules(), button_options=dual())
    r.core.refuse_starts = "storage is full"
    r.feed(frames).close()
    assert r.of(Started) == []
    assert [e.reason for e in r.events if type(e).__name__ == "Rejected"] == ["storage is full"]


def test_record_and_the_box_make_the_same_recording_from_the_same_line(tmp_path):
    # The same WAV through `edge-recorder record --config` and through the daemon (`run` with the WAV as
    # its line): start, pause, resume and stop key sequences give identical audio and the same events.
    import json
    import subprocess
    import sys

    import soundfile as sf

    from .daemon_run import ROOT, Box, audio_of

    frames = line(7.0, [("*", 1.0), ("1", 1.3), ("*", 2.0), ("3", 2.3), ("*", 3.5), ("4", 3.8), ("*", 5.0), ("2", 5.3)])
    box = Box.make(
        tmp_path / "box",
        frames,
        R,
        dtmf={**SEQUENCES, "track": "inbound"},
        recording={"channels": "dual"},
    )
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()

    offline = tmp_path / "offline"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware.cli.main",
            "record",
            str(box.audio),
            "--config",
            str(box.config),
            "--out",
            str(offline),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    printed = [json.loads(text) for text in proc.stdout.splitlines()]
    [path] = offline.glob("*.wav")
    recorded, _ = sf.read(path, dtype="int16", always_2d=True)
    np.testing.assert_array_equal(recorded, audio_of(row))
    assert row["duration"] == pytest.approx(len(recorded) / R, abs=1e-4)  # the file's length, to 0.1 ms

    def story(events):
        fields = ("state", "status", "end_reason", "duration", "size", "sha256", "pause_behavior", "key", "track")
        return [
            (e["type"], {k: e["data"].get(k) for k in fields})
            for e in events
            if e["type"].startswith(("recording.", "dtmf."))
        ]

    assert story(printed) == story(result.events)
    assert [e["type"] for e in printed if e["type"].startswith("recording.")] == [
        "recording.started",
        "recording.paused",
        "recording.resumed",
        "recording.finished",
    ]


def test_a_key_heard_on_both_tracks_is_one_press():
    # Stereo with [dtmf] track = "both": the far party's *2 leaks into the handset channel 20 dB down.
    inbound = sig.noise(5.0, R, -55)
    outbound = sig.noise(5.0, R, -55, seed=7)
    for k, at in (("*", 2.0), ("2", 2.3)):
        sig.place(inbound, sig.key(k, R, 0.08), at, R)
        sig.place(outbound, sig.key(k, R, 0.08) * 0.1, at + 0.001, R)
    frames = sig.to_int16(inbound, outbound)
    r = run(frames, 0.02, rules(sequence_track="both"), Start(dual(), "api"))
    [done] = r.finished
    assert done.end_reason is EndReason.STOP and abs(done.at - 2 * R) <= R // 1000


def test_a_sequence_keyed_before_a_state_change_acts_after_it():
    # Paused (skip) at 0.5 s, resumed over the API at 1.2 s, while someone keys the pause sequence from
    # 1.0 s: the resume stands, and the pause takes effect after it, not at the key's onset.
    frames = line(4.0, [("*", 1.0), ("3", 1.3)])
    r = sig.Run(R, 2, rules=rules(), button_options=dual())
    r.send(Start(dual(), "api"))
    r.feed(frames[: R // 2]).send(Pause(behavior=PauseBehavior.SKIP))
    r.feed(frames[R // 2 : round(1.2 * R)]).send(Resume())
    r.feed(frames[round(1.2 * R) :]).close()
    changes = [(type(e).__name__, e.at) for e in r.events if isinstance(e, Paused | Resumed)]
    assert changes == [("Paused", R // 2), ("Resumed", round(1.2 * R)), ("Paused", round(1.2 * R))]
    assert [e.at for e in r.events if isinstance(e, Paused | Resumed)] == sorted(e[1] for e in changes)


def test_a_start_or_resume_sequence_completed_by_the_end_of_the_input_does_nothing():
    frames = line(2.0, [("*", 1.6), ("1", 1.9)], tone=0.1)  # the 1 still sounds when the input ends
    r = run(frames, 0.02, rules())
    assert r.of(Started) == [] and r.finished == []


def test_a_reload_during_a_call_keeps_the_call_going_and_ending():
    frames = line(6.0, [])
    session_rules = rules(sequences={}, detect="hook", auto_record="off-hook", stop_hold=1.0, call_pre_roll=0)
    r = sig.Run(R, 2, rules=session_rules, button_options=dual())
    r.send(Hook(True)).feed(frames[:R]).send(Hook(False)).feed(frames[R : round(1.5 * R)])
    r.core.configure(dual(), session_rules)  # SIGHUP in the stop hold
    r.feed(frames[round(1.5 * R) :])
    [done] = r.finished
    assert (done.end_reason, done.at) == (EndReason.CALL_END, 2 * R)


def test_a_sequence_that_does_not_act_on_a_recording_leaves_silence_not_its_tones():
    # Recording already: the start sequence starts no second recording, the resume sequence has
    # nothing to resume; neither leaves its tones in the file, which keeps its length.
    frames = line(5.0, [("*", 1.0), ("1", 1.3), ("*", 3.0), ("4", 3.3)])
    r = run(frames, 0.02, rules(), Start(dual(), "api"))
    [done] = r.finished
    assert len(r.of(Started)) == 1 and keys_in(r.file()) == []
    assert done.frames == len(r.file()) == 5 * R
    [k1, k2, k3, k4] = r.keys
    hushed = np.flatnonzero(r.file()[:, 1] == 0)  # the counter is 0 only where silence was put
    assert hushed.size == (k2.end + GUARD - k1.start) + (k4.end + GUARD - k3.start) + 1  # + the counter's own 0
    assert [e.reason for e in r.events if type(e).__name__ == "Rejected"] == [
        "a recording is already active; the start sequence started none"
    ]


def test_the_session_says_while_a_key_is_down_or_a_sequence_part_way_keyed():
    """``keying`` is what a live caller reads to feed the session period by period rather than in blocks
    (the daemon's capture and loop): true from a key proven down to its end, and while a sequence waits for
    its next key; false on a quiet line and once the sequence is done."""
    frames = line(4.0, [("*", 1.0), ("1", 1.3)], tone=0.12)
    r = sig.Run(R, 2, rules=rules(), button_options=dual())
    said = []
    for at in range(0, len(frames), R // 50):
        r.feed(frames[at : at + R // 50], piece=0.02)
        said.append((at + R // 50, r.core.keying))
    keying = [end for end, on in said if on]
    assert keying, "a key was down at some point"
    assert min(keying) > 1.0 * R and min(keying) < 1.0 * R + 0.1 * R, "from the first key, within its proof"
    assert all(1.0 * R < end <= 1.3 * R + 0.2 * R for end in keying), "only while the sequence is keyed"
    assert not [on for end, on in said if end > 1.6 * R and on], "done once the sequence acted"
    assert r.of(Started), "the sequence started a recording"
