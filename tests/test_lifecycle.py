"""The lifecycle of a recording (firmware/core/lifecycle.py): the whole state machine, the statuses after
the core, the event each change publishes, and errors that say which state and trigger clashed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from firmware.core import ControlError, InputLayout, Pause, Recorder, Resume, Start, Stop
from firmware.core import lifecycle as lc
from firmware.core.lifecycle import EndReason, State, StateError, Status, Trigger


@pytest.mark.parametrize(("state", "trigger"), list(itertools.product(State, Trigger)))
def test_every_state_and_trigger_either_moves_by_the_table_or_is_refused_naming_both(state, trigger):
    if (state, trigger) in lc.TRANSITIONS:
        assert lc.next_state(state, trigger) is lc.TRANSITIONS[state, trigger]
        return
    with pytest.raises(StateError) as err:
        lc.next_state(state, trigger, "desk")
    assert (err.value.state, err.value.trigger, err.value.recording) == (state, trigger, "desk")
    assert isinstance(err.value, ControlError)
    assert state.value in str(err.value) and trigger.value in str(err.value)


def test_only_active_states_move_and_every_end_leaves_the_active_states():
    assert {state for state, _ in lc.TRANSITIONS} == lc.ACTIVE
    for reason in EndReason:
        for state in lc.ACTIVE:
            assert lc.next_state(state, lc.ending(reason)) not in lc.ACTIVE


def test_each_end_reason_has_its_trigger_and_each_end_state_its_event():
    assert lc.ending(EndReason.NO_INPUT) is Trigger.NO_INPUT
    assert lc.ending(EndReason.ERROR) is Trigger.FAIL
    assert {lc.ending(r) for r in EndReason} == {Trigger.END, Trigger.NO_INPUT, Trigger.FAIL}
    assert [lc.finished_event_type(s) for s in (State.FINISHED, State.NO_INPUT, State.ERROR)] == [
        "recording.finished",
        "recording.no_input",
        "recording.error",
    ]
    assert lc.finished_status(State.FINISHED, empty=True) is Status.ABSENT
    assert lc.finished_status(State.ERROR) is Status.FAILED


def test_the_buttons():
    assert lc.record_button(0) == "start" and lc.record_button(2) == "stop"
    assert lc.pause_button([State.PAUSED, State.PAUSED]) is Trigger.RESUME
    assert lc.pause_button([State.PAUSED, State.RECORDING]) is Trigger.PAUSE
    with pytest.raises(ControlError, match="nothing to pause"):
        lc.pause_button([])


def test_delete_is_refused_for_unfinished_or_not_uploaded_recordings_unless_forced():
    rid = "RE" + "0" * 32
    assert lc.delete_refusal(rid, "completed", [], force=False) is None
    assert "only finished" in lc.delete_refusal(rid, "in-progress", [], force=True)
    assert "deleted already" in lc.delete_refusal(rid, "deleted", [], force=True)
    why = lc.delete_refusal(rid, "completed", [("https://central/up", "pending")], force=False)
    assert "not uploaded yet" in why and "https://central/up (pending)" in why and "force" in why
    assert lc.delete_refusal(rid, "completed", [("mqtt", "failed")], force=True) is None


def test_the_core_raises_the_state_error_itself_and_events_carry_the_new_state():
    core = Recorder(InputLayout(8000, 1))
    started = core.send(Start())[0]
    core.feed(np.zeros(800, np.int16))
    paused = core.send(Pause())[0]
    with pytest.raises(StateError) as err:
        core.send(Pause())
    assert (err.value.state, err.value.trigger) == (State.PAUSED, Trigger.PAUSE)
    resumed = core.send(Resume())[0]
    assert [(e.state, e.status) for e in (started, paused, resumed)] == [
        (State.RECORDING, Status.IN_PROGRESS),
        (State.PAUSED, Status.PAUSED),
        (State.RECORDING, Status.IN_PROGRESS),
    ]
    finished = [e for e in core.send(Stop()) if type(e).__name__ == "Finished"]
    assert (finished[0].state, finished[0].status) == (State.FINISHED, Status.COMPLETED)
