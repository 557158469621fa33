"""The recording core: every start option and end reason."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.core import (
    ButtonPress,
    CallEnd,
    ControlError,
    EndReason,
    Finished,
    Pause,
    PauseBehavior,
    PauseButtonPress,
    Paused,
    RecordingOptions,
    Rejected,
    Resume,
    Start,
    Started,
    State,
    Status,
    Stop,
    Tone,
    ToneKind,
)
from firmware.core.tones import render
from tests import signals as sig

R = 16000


def opts(**kw) -> RecordingOptions:
    return RecordingOptions.from_mapping(kw)


def ramp(seconds: float, channels: int = 1) -> np.ndarray:
    """A sample counter as audio: frame i holds i mod 30000 (channel 1 negated)."""
    i = np.arange(round(seconds * R)) % 30000
    cols = [i, -i][:channels]
    return np.stack(cols, axis=1).astype(np.int16)


def power_at(x: np.ndarray, freq: float) -> float:
    n = np.arange(x.size)
    return abs(np.sum(x * np.exp(-2j * np.pi * freq * n / R))) / max(x.size, 1)


# -- end_on_key ---------------------------------------------------------------------------
def voicemail_call(key_at: float = 3.0, k: str = "#", track: int = 0):
    inbound = sig.noise(5, R, -60)
    sig.place(inbound, sig.speech("Please call me back tomorrow.", R), 0.5, R)
    outbound = sig.noise(5, R, -60, seed=9)
    onset = sig.place([inbound, outbound][track], sig.key(k, R, 0.12), key_at, R)
    return sig.to_int16(inbound, outbound), onset


@pytest.mark.parametrize("piece", [0.02, 1.0])
def test_end_on_key_trims_the_key_tone(piece):
    frames, onset = voicemail_call()
    run = sig.Run(R, 2).send(Start(opts(end_on_key="#", channels="dual"))).feed(frames, piece)
    (done,) = run.finished
    (key,) = run.keys
    assert done.end_reason is EndReason.END_ON_KEY and done.key == "#"
    assert abs(key.start - onset) <= R // 1000
    assert done.at == key.start
    audio = run.file()
    assert len(audio) == done.frames == key.start
    tail = audio[-160:, 0].astype(float)
    assert power_at(tail, 941) < 20 and power_at(tail, 1477) < 20


def test_end_on_key_ignores_other_keys_and_tracks_not_recorded():
    inbound = sig.noise(4, R, -60)
    outbound = sig.noise(4, R, -60, seed=3)
    sig.place(inbound, sig.key("5", R), 1.0, R)  # not an end key
    sig.place(outbound, sig.key("#", R), 2.0, R)  # an end key on the outbound track
    onset = sig.place(inbound, sig.key("#", R), 3.0, R)
    run = sig.Run(R, 2).send(Start(opts(end_on_key="#*", track="inbound"))).feed(sig.to_int16(inbound, outbound))
    (done,) = run.finished
    assert done.at == run.keys[-1].start and abs(done.at - onset) <= R // 1000
    assert [(k.key, k.track) for k in run.keys] == [("5", "inbound"), ("#", "outbound"), ("#", "inbound")]


def test_keys_are_reported_with_or_without_a_recording():
    inbound = np.zeros(R * 2)
    at = sig.place(inbound, sig.key("A", R, 0.06), 0.5, R)
    run = sig.Run(R, 1).feed(sig.to_int16(inbound)).close()
    (key,) = run.keys
    assert key.key == "A" and key.track == "both" and abs(key.start - at) <= 16


# -- silence and no input -------------------------------------------------------------------
def test_end_on_silence_on_a_hissing_line():
    line = sig.noise(12, R, -35)  # a loud hiss throughout
    talk = sig.speech("Hello, I am calling about my order from last week.", R)
    sig.place(line, talk * 0.9, 1.0, R)
    speech_end = 1.0 + sig.last_sound(talk) / R  # espeak-ng pads its output with silence
    run = sig.Run(R).send(Start(opts(end_on_silence=2))).feed(sig.to_int16(line))
    (done,) = run.finished
    assert done.end_reason is EndReason.END_ON_SILENCE and done.status is Status.COMPLETED
    assert speech_end + 1.6 <= done.at / R <= speech_end + 2.2


def test_initial_timeout_ends_with_no_input_and_absent():
    run = sig.Run(R).send(Start(opts(initial_timeout=1.5))).feed(sig.to_int16(sig.noise(4, R, -40)))
    (done,) = run.finished
    assert (done.state, done.status, done.end_reason) == (State.NO_INPUT, Status.ABSENT, EndReason.NO_INPUT)
    assert 1.5 * R <= done.at <= 1.52 * R


def test_initial_timeout_does_not_fire_once_someone_speaks():
    line = sig.noise(4, R, -60)
    sig.place(line, sig.speech("Hi there.", R), 0.5, R)
    run = sig.Run(R).send(Start(opts(initial_timeout=1.5))).feed(sig.to_int16(line)).close()
    assert run.finished[0].end_reason is EndReason.CALL_END


def test_end_on_silence_without_any_speech_is_no_input():
    run = sig.Run(R).send(Start(opts(end_on_silence=1))).feed(np.zeros((3 * R, 1), np.int16))
    (done,) = run.finished
    assert done.state is State.NO_INPUT and done.status is Status.ABSENT


def test_sensitivity_decides_whether_quiet_speech_counts():
    line = sig.noise(6, R, -75)
    sig.place(line, sig.speech("This is a very quiet caller.", R) * 0.02, 0.5, R)  # about -40 dBFS
    frames = sig.to_int16(line)
    deaf = sig.Run(R).send(Start(opts(initial_timeout=3, input_sensitivity=0))).feed(frames).close()
    keen = sig.Run(R).send(Start(opts(initial_timeout=3, input_sensitivity=90))).feed(frames).close()
    assert deaf.finished[0].end_reason is EndReason.NO_INPUT
    assert keen.finished[0].end_reason is EndReason.CALL_END


# -- trim ----------------------------------------------------------------------------------
def test_trim_silence_keeps_the_speech_and_a_little_around_it():
    line = sig.noise(8, R, -65)
    talk = sig.speech("Trim the silence around me.", R)
    at = sig.place(line, talk, 3.0, R)
    first, last = at + sig.first_sound(talk), at + sig.last_sound(talk)
    run = sig.Run(R).send(Start(opts(trim="trim-silence"))).feed(sig.to_int16(line)).close()
    (done,) = run.finished
    lo, hi = done.trim
    assert first - 0.3 * R <= lo <= first and last <= hi <= last + 0.3 * R
    assert done.status is Status.COMPLETED and done.duration == (hi - lo) / R


def test_trim_with_nothing_left_is_absent():
    run = sig.Run(R).send(Start(opts(trim="trim-silence"))).feed(sig.to_int16(sig.noise(3, R, -50))).close()
    (done,) = run.finished
    assert done.state is State.FINISHED and done.status is Status.ABSENT


# -- pause, max length, pre-roll -----------------------------------------------------------------
@pytest.mark.parametrize("behavior", ["silence", "skip"])
def test_pause_keeps_the_timeline_or_skips_exactly(behavior):
    frames = ramp(3)
    run = sig.Run(R).send(Start(opts()))
    run.send(Pause(behavior=PauseBehavior(behavior), at=R)).send(Resume(at=2 * R))
    run.feed(frames, 0.03).close()
    audio = run.file()[:, 0]
    if behavior == "silence":
        assert audio.size == 3 * R
        assert not audio[R : 2 * R].any()
        assert np.array_equal(audio[2 * R :], frames[2 * R :, 0])
    else:
        assert audio.size == 2 * R
        assert np.array_equal(audio, np.concatenate([frames[:R, 0], frames[2 * R :, 0]]))
    assert [type(e).__name__ for e in run.events] == ["Started", "Paused", "Resumed", "Finished"]


def test_max_length_is_exact():
    run = sig.Run(R).send(Start(opts(max_length=1.25))).feed(ramp(3), 0.5)
    (done,) = run.finished
    assert done.end_reason is EndReason.MAX_LENGTH and done.frames == 1.25 * R == len(run.file())


def test_pre_roll_brings_exactly_the_audio_before_the_start():
    frames = ramp(4)
    run = sig.Run(R).feed(frames[: 2 * R]).send(Start(opts(pre_roll=0.75))).feed(frames[2 * R :]).close()
    started = run.of(Started)[0]
    assert started.pre_roll == 0.75 * R
    assert np.array_equal(run.file()[:, 0], frames[int(1.25 * R) :, 0])


def test_pre_roll_is_capped_by_the_audio_there_is():
    run = sig.Run(R).feed(ramp(0.5)).send(Start(opts(pre_roll=2))).close()
    assert run.of(Started)[0].pre_roll == 0.5 * R


def test_a_start_since_an_earlier_sample_begins_there_with_its_pre_roll():
    frames = ramp(4)
    since = int(1.5 * R)
    run = sig.Run(R).feed(frames[: 2 * R]).send(Start(opts(pre_roll=0.25), since=since)).feed(frames[2 * R :]).close()
    [started] = run.of(Started)
    assert (started.at, started.recording.start, started.pre_roll) == (since, since, 0.25 * R)
    assert np.array_equal(run.file()[:, 0], frames[since - R // 4 :, 0])


# -- tones ---------------------------------------------------------------------------------------
def test_beep_goes_into_the_outbound_track_at_the_start():
    inbound = np.zeros(2 * R)
    outbound = np.zeros(2 * R)
    run = sig.Run(R, 2).feed(sig.to_int16(inbound, outbound)[:R])
    run.send(Start(opts(beep=True, channels="dual", pre_roll=0.5)))
    run.feed(sig.to_int16(inbound, outbound)[R:]).close()
    beep = render(ToneKind.BEEP, R)
    audio = run.file()
    pre = R // 2
    assert not audio[:, 0].any()  # nothing on the inbound side
    assert not audio[:pre, 1].any()
    assert np.array_equal(audio[pre : pre + beep.size, 1], beep)
    (tone,) = run.of(Tone)
    assert tone.kind is ToneKind.BEEP and tone.at == R


def test_warning_tone_repeats_while_recording_and_not_while_paused():
    run = sig.Run(R).send(Start(opts(warning_tone_interval=2)))
    run.send(Pause(at=round(3.9 * R))).send(Resume(at=round(6.5 * R)))
    run.feed(np.zeros((9 * R, 1), np.int16)).close()
    assert [t.at / R for t in run.of(Tone)] == [2.0, 8.0]
    warn = render(ToneKind.WARNING, R)
    audio = run.file()[:, 0]
    assert np.array_equal(audio[2 * R : 2 * R + warn.size], warn)
    assert not audio[6 * R : 8 * R].any()


# -- tracks and channels ---------------------------------------------------------------------------
def test_dual_puts_inbound_left_and_outbound_right():
    frames = ramp(1, channels=2)
    run = sig.Run(R, 2).send(Start(opts(channels="dual"))).feed(frames).close()
    assert np.array_equal(run.file(), frames)


@pytest.mark.parametrize(("track", "expected"), [("inbound", [1, 0]), ("outbound", [0, 1]), ("both", [1, 1])])
def test_track_selects_what_a_mono_file_holds(track, expected):
    frames = np.stack([np.full(R, 100), np.full(R, 1000)], axis=1).astype(np.int16)
    run = sig.Run(R, 2).send(Start(opts(track=track))).feed(frames).close()
    assert set(run.file()[:, 0]) == {100 * expected[0] + 1000 * expected[1]}


def test_dual_or_a_single_track_from_a_mono_input_is_refused():
    run = sig.Run(R, 1)
    with pytest.raises(ControlError, match="channels=dual"):
        run.send(Start(opts(channels="dual")))
    with pytest.raises(ControlError, match="track=inbound"):
        run.send(Start(opts(track="inbound")))
    assert run.events == []


# -- controls ---------------------------------------------------------------------------------------
def test_button_starts_and_stops():
    run = sig.Run(R).send(ButtonPress(at=R)).send(ButtonPress(at=3 * R)).feed(ramp(4))
    (started,) = run.of(Started)
    (done,) = run.finished
    assert started.recording.source == "button" and started.at == R
    assert done.end_reason is EndReason.BUTTON and done.frames == 2 * R


def test_pause_button_toggles():
    run = sig.Run(R).send(Start(opts())).send(PauseButtonPress(at=R)).send(PauseButtonPress(at=2 * R))
    run.feed(ramp(3)).close()
    assert [type(e).__name__ for e in run.events] == ["Started", "Paused", "Resumed", "Finished"]


def test_several_recordings_each_with_its_own_options():
    frames, _ = voicemail_call(key_at=3.0)
    run = sig.Run(R, 2)
    run.send(Start(opts(name="monitor", channels="dual")))
    run.send(Start(opts(name="voicemail", end_on_key="#", track="inbound"), at=R))
    run.feed(frames).send(Stop("monitor"))
    by_name = {d.recording.name: d for d in run.finished}
    assert by_name["voicemail"].end_reason is EndReason.END_ON_KEY
    assert by_name["monitor"].end_reason is EndReason.STOP and by_name["monitor"].frames == len(frames)
    assert by_name["voicemail"].recording.call_id == by_name["monitor"].recording.call_id
    assert run.file(by_name["voicemail"].recording.id).shape[1] == 1


def test_current_needs_exactly_one_active_recording():
    run = sig.Run(R).send(Start(opts(name="a"))).send(Start(opts(name="b")))
    with pytest.raises(ControlError, match="exactly one active recording; 2 are active"):
        run.send(Stop())
    with pytest.raises(ControlError, match="no active recording"):
        run.send(Stop("c"))
    with pytest.raises(ControlError, match="already active"):
        run.send(Start(opts(name="a")))


def test_pausing_twice_is_refused_naming_the_state():
    run = sig.Run(R).send(Start(opts(name="x"))).send(Pause("x"))
    with pytest.raises(ControlError, match="cannot pause recording 'x': it is paused"):
        run.send(Pause("x"))


def test_a_future_control_that_fails_comes_back_as_an_event():
    run = sig.Run(R).send(Stop("nobody", at=R)).feed(ramp(2))
    (rejected,) = run.of(Rejected)
    assert "nobody" in rejected.reason


def test_call_end_ends_everything_and_starts_a_new_call():
    run = sig.Run(R).send(Start(opts(name="a"))).send(Start(opts(name="b")))
    run.send(CallEnd(at=R)).send(Start(opts(), at=2 * R)).feed(ramp(3))
    first, second = run.finished[0].recording, run.of(Started)[2].recording
    assert {d.end_reason for d in run.finished} == {EndReason.CALL_END}
    assert first.call_id != second.call_id
    assert first.id.startswith("RE") and len(first.id) == 34 and first.call_id.startswith("CA")


def test_the_same_call_gives_the_same_result_however_it_is_fed():
    frames, _ = voicemail_call()
    results = []
    for piece in (0.01, 0.02, 0.4, 2.0):
        ids = iter(f"RE{i:032x}" for i in range(100))
        run = sig.Run(R, 2, new_id=lambda prefix, ids=ids: next(ids))
        run.send(Start(opts(end_on_key="#", channels="dual", beep=True))).feed(frames, piece)
        results.append((run.finished[0].at, run.file().tobytes()))
    assert all(r == results[0] for r in results)


def test_paused_event_carries_the_behavior():
    run = sig.Run(R).send(Start(opts())).send(Pause(behavior=PauseBehavior.SKIP))
    assert run.of(Paused)[0].behavior is PauseBehavior.SKIP


def test_finished_counts_what_was_written():
    run = sig.Run(R).send(Start(opts())).feed(ramp(1.5)).close(EndReason.SHUTDOWN)
    done: Finished = run.finished[0]
    assert done.end_reason is EndReason.SHUTDOWN and done.frames == len(run.file()) == 1.5 * R
    assert done.duration == 1.5
