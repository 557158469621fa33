"""The lifecycle of a recording: every state, status and event type, in one place.

Theory of operation
-------------------
Two rules, after h11's ``_state.py``: everything that moves a recording is
decided in this file, and it does not know who asked (a button, a key sequence,
MQTT, the HTTP API, the CLI, retention).

A recording has a *state* (SignalWire's words, sent in events) while the core
runs it, and a *status* (Twilio's words, kept in the catalog) for its whole
life. The state moves by triggers, as the table ``TRANSITIONS`` says; a trigger
with no row for the current state is refused with ``StateError``, which keeps
the state, the trigger and the recording as fields, so HTTP and MQTT can say
which clashed. While recording, the status follows the state (``STATUS``).

After the core the status moves on, outside the state machine:

- ``processing`` from the end of the recording until its file is written
  (finalising, trimming, encoding);
- then ``completed``; or ``absent`` when there is nothing to keep: no input,
  nothing left after trimming, an automatic recording shorter than
  ``[call] min_length`` (``finished_status``); or ``failed`` (state ``error``);
- ``deleted`` when its media are removed, by a user or by retention; only a
  finished recording can be deleted (``DELETABLE``), and one whose upload is not
  confirmed only when the caller forces it (``delete_refusal``).

Each change publishes one event type (``EVENT_TYPES``, ``finished_event_type``).
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


# -- the state machine -------------------------------------------------------------------------

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

ACTIVE = frozenset({State.RECORDING, State.PAUSED})

#: Which trigger ends a recording, by why it ended (any other reason is ``END``).
ENDING: dict[EndReason, Trigger] = {EndReason.NO_INPUT: Trigger.NO_INPUT, EndReason.ERROR: Trigger.FAIL}

STATUS: dict[State, Status] = {
    State.RECORDING: Status.IN_PROGRESS,
    State.PAUSED: Status.PAUSED,
    State.FINISHED: Status.COMPLETED,
    State.NO_INPUT: Status.ABSENT,
    State.ERROR: Status.FAILED,
}


class ControlError(ValueError):
    """A control that cannot be applied now; the message says why."""


class InputMismatch(ControlError):
    """Options the input cannot give (``dual`` from a mono line); ``option`` names the one."""

    def __init__(self, message: str, option: str | None) -> None:
        super().__init__(message)
        self.option = option


class StateError(ControlError):
    """A trigger that the recording's current state does not allow; ``state``, ``trigger`` and
    ``recording`` say which clashed.

    >>> next_state(State.PAUSED, Trigger.PAUSE, "desk")
    Traceback (most recent call last):
    ...
    firmware.core.lifecycle.StateError: cannot pause recording 'desk': it is paused
    """

    def __init__(self, state: State, trigger: Trigger, recording: str) -> None:
        self.state, self.trigger, self.recording = state, trigger, recording
        super().__init__(f"cannot {trigger.value} recording {recording!r}: it is {state.value}")


def next_state(state: State, trigger: Trigger, recording: str = "") -> State:
    try:
        return TRANSITIONS[state, trigger]
    except KeyError:
        raise StateError(state, trigger, recording) from None


def ending(reason: EndReason) -> Trigger:
    return ENDING.get(reason, Trigger.END)


# -- the buttons -------------------------------------------------------------------------------


def record_button(active: int) -> str:
    """What the record button does with ``active`` recordings running: ``"start"`` or ``"stop"`` (them all)."""
    return "stop" if active else "start"


def pause_button(states: list[State]) -> Trigger:
    """What the pause button does: resume when every active recording is paused, else pause the recording ones."""
    if not states:
        raise ControlError("nothing to pause: no recording is active")
    return Trigger.RESUME if all(s is State.PAUSED for s in states) else Trigger.PAUSE


# -- after the core ----------------------------------------------------------------------------


def finished_status(state: State, *, empty: bool = False) -> Status:
    """The status of a recording that ended in ``state``; ``empty``: nothing in it is kept."""
    if state is State.FINISHED and empty:
        return Status.ABSENT
    return STATUS[state]


def stored_status(status: Status, *, written: bool, failed: bool) -> str:
    """The status once the file is made: a recording that left no file (and no storage failure to
    explain it) is ``absent``."""
    if not written and not failed:
        return Status.ABSENT.value
    return Status(status).value


#: Statuses whose media may be deleted.
DELETABLE = frozenset({Status.COMPLETED, Status.ABSENT, Status.FAILED})
#: Statuses of a recording not finished yet.
UNFINISHED = frozenset({Status.IN_PROGRESS, Status.PAUSED, Status.PROCESSING})


def deleted_fields(when: str) -> dict[str, object]:
    """A deleted recording's catalog fields: its media are gone, its metadata stay until retention forgets them."""
    return {"status": Status.DELETED.value, "path": None, "deleted_at": when}


def delete_refusal(recording_id: str, status: str, pending: list[tuple[str, str]], force: bool) -> str | None:
    """Why a recording cannot be deleted now, or None. ``pending``: (destination, upload state) of its
    uploads not confirmed yet; forced, those are cancelled instead."""
    if status == Status.DELETED:
        return f"{recording_id} is deleted already"
    if status not in DELETABLE:
        return f"{recording_id} is {status}; only finished recordings can be deleted"
    if pending and not force:
        where = ", ".join(f"{dest} ({state})" for dest, state in pending)
        return (
            f"{recording_id} is not uploaded yet (to {where}): its media would be lost; "
            'delete it with force to cancel the upload (--force; force=true over HTTP, "force": true over MQTT)'
        )
    return None


# -- events ------------------------------------------------------------------------------------

EVENT_TYPES: dict[str, str] = {
    "started": "recording.started",
    "paused": "recording.paused",
    "resumed": "recording.resumed",
    "deleted": "recording.deleted",
    "available": "recording.available",
}
FINISHED_EVENT_TYPES: dict[State, str] = {
    State.FINISHED: "recording.finished",
    State.NO_INPUT: "recording.no_input",
    State.ERROR: "recording.error",
}


def finished_event_type(state: State | str | None) -> str:
    """The event a recording's end publishes, by the state it ended in."""
    try:
        return FINISHED_EVENT_TYPES[State(state)]
    except ValueError:
        return "recording.finished"
