"""The recording state machine: every state change a recording can make.

States are SignalWire's (sent in events); the status a catalog keeps is
Twilio's, derived from the state (``STATUS``). A trigger that has no row in
``TRANSITIONS`` for the current state is refused with ``StateError``, which
names both, so a bad command gets a clear answer and never half-applies.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    RECORDING = "recording"
    PAUSED = "paused"
    FINISHED = "finished"
    NO_INPUT = "no_input"
    ERROR = "error"


class Status(StrEnum):
    IN_PROGRESS = "in-progress"
    PAUSED = "paused"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ABSENT = "absent"
    FAILED = "failed"
    DELETED = "deleted"


class EndReason(StrEnum):
    STOP = "stop"
    BUTTON = "button"
    END_ON_KEY = "end_on_key"
    END_ON_SILENCE = "end_on_silence"
    MAX_LENGTH = "max_length"
    CALL_END = "call_end"
    NO_INPUT = "no_input"
    ERROR = "error"
    SHUTDOWN = "shutdown"
    RECOVERED = "recovered"


class Trigger(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    END = "end"
    NO_INPUT = "end with no input"
    FAIL = "fail"


TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.RECORDING, Trigger.PAUSE): State.PAUSED,
    (State.PAUSED, Trigger.RESUME): State.RECORDING,
    (State.RECORDING, Trigger.END): State.FINISHED,
    (State.PAUSED, Trigger.END): State.FINISHED,
    (State.RECORDING, Trigger.NO_INPUT): State.NO_INPUT,
    (State.PAUSED, Trigger.NO_INPUT): State.NO_INPUT,
    (State.RECORDING, Trigger.FAIL): State.ERROR,
    (State.PAUSED, Trigger.FAIL): State.ERROR,
}
# Not in the table: a FINISHED recording whose trimmed audio is empty gets the
# status ABSENT instead of COMPLETED (see ``status_of``).

ACTIVE = frozenset({State.RECORDING, State.PAUSED})

STATUS: dict[State, Status] = {
    State.RECORDING: Status.IN_PROGRESS,
    State.PAUSED: Status.PAUSED,
    State.FINISHED: Status.COMPLETED,
    State.NO_INPUT: Status.ABSENT,
    State.ERROR: Status.FAILED,
}


class StateError(ValueError):
    """A trigger that the recording's current state does not allow."""

    def __init__(self, state: State, trigger: Trigger, name: str) -> None:
        self.state, self.trigger = state, trigger
        super().__init__(f"cannot {trigger.value} recording {name!r}: it is {state.value}")


def next_state(state: State, trigger: Trigger, name: str = "") -> State:
    try:
        return TRANSITIONS[state, trigger]
    except KeyError:
        raise StateError(state, trigger, name) from None


def status_of(state: State, empty: bool = False) -> Status:
    if state is State.FINISHED and empty:
        return Status.ABSENT
    return STATUS[state]
