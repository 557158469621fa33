"""The control API: the one way in for every front end.

The GPIO panel, DTMF sequences, MQTT commands, the HTTP API and the CLI all
start, stop, pause and resume recordings through ``Control``, so they behave
the same and fail with the same messages. Calls may come from any thread; the
ones that change recordings run on the daemon's loop between two audio periods
(``Box.call``) and wait for its answer. Reads go straight to the catalog.

Errors are ``ControlError`` (the request cannot be done now: nothing active,
an unknown name, storage full), ``OptionError`` (a bad start option) and
``LookupError`` (no such recording), each with a message that names the
problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .core import (
    CURRENT,
    ButtonPress,
    ControlError,
    OptionError,
    Pause,
    PauseBehavior,
    PauseButtonPress,
    RecordingOptions,
    Resume,
    StateError,
    Stop,
)
from .core.events import Finished, Paused, Resumed

if TYPE_CHECKING:
    from .daemon.box import Box

__all__ = ["Control", "ControlError", "OptionError", "error_fields"]

SOURCES = ("button", "dtmf", "mqtt", "api", "cli", "auto")


def error_fields(exc: Exception) -> dict[str, str]:
    """What an error answer carries besides its message: for a state clash, the recording's ``state``, the
    ``trigger`` it did not allow and the ``recording``, so HTTP and MQTT callers can tell which clashed."""
    if isinstance(exc, StateError):
        return {"state": exc.state.value, "trigger": exc.trigger.value, "recording": exc.recording}
    return {}


def start_request(body: Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None, list[dict[str, Any]]]:
    """What a start request asks for: native options, or a vendor's document (``firmware.dialects``).

    Returns (action, options, target, unsupported): ``action`` is "start" or
    "stop" (TwiML's ``<Stop><Recording>``, Sinch's ``StopRecording``), and
    ``unsupported`` lists the document's fields the box cannot honour, and why.
    """
    from . import dialects

    found = dialects.detect(dict(body))
    if found is None:
        options = body.get("options", body) if isinstance(body.get("options"), dict) else body
        return "start", dict(options), None, []
    translation = dialects.translate(*found)
    unsupported = [{"field": u.field, "value": u.value, "reason": u.reason} for u in translation.unsupported]
    return translation.action, dict(translation.options), translation.target, unsupported


class Control:
    """Recordings on a running box.

    ``start`` returns the new recording's fields; ``stop``, ``pause`` and
    ``resume`` the fields of the recording they acted on.
    """

    def __init__(self, box: Box) -> None:
        self.box = box

    # -- changes (run on the loop) ---------------------------------------------------------
    def start(self, options: Mapping[str, Any] | None = None, source: str = "api") -> dict[str, Any]:
        if source not in SOURCES:
            raise ControlError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
        opts = RecordingOptions.from_mapping(dict(options or {}), self.box.config.recording)
        if opts.status_callback:  # refuse a bad callback now, not when the recording reports
            from .delivery.webhooks import Callback

            Callback.from_options(opts.status_callback, opts.status_callback_method, list(opts.status_callback_events))
        return self.box.call(lambda: self.box.start_recording(opts, source))

    def stop(self, target: str = CURRENT) -> dict[str, Any]:
        return self._act(Stop(target), Finished)

    def pause(self, target: str = CURRENT, pause_behavior: str = "silence") -> dict[str, Any]:
        try:
            behavior = PauseBehavior(pause_behavior)
        except ValueError:
            raise OptionError("pause_behavior", pause_behavior, "silence or skip") from None
        return self._act(Pause(target, behavior), Paused)

    def resume(self, target: str = CURRENT) -> dict[str, Any]:
        return self._act(Resume(target), Resumed)

    def _act(self, control, kind) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            events = self.box.control(control)
            done = next((e for e in events if isinstance(e, kind)), None)
            if done is None:
                raise ControlError(f"{type(control).__name__.lower()} had no effect on {control.target!r}")
            return self.box.catalog.get(done.recording.id) or {}

        return self.box.call(run)

    def button(self) -> list:
        """The record button: start with the ``[recording]`` options, or stop what is active."""
        return self.box.call(lambda: self.box.control(ButtonPress()))

    def pause_button(self) -> list:
        """The pause button: pause what records, or resume when all are paused."""
        return self.box.call(lambda: self.box.control(PauseButtonPress()))

    def hook(self, off_hook: bool) -> None:
        """The hook switch changed."""
        self.box.call(lambda: self.box.hook(off_hook))

    # -- reads -------------------------------------------------------------------------------
    def active(self) -> list[dict[str, Any]]:
        return self.box.call(lambda: self.box.snapshot()["recordings"])

    def list(self, **filters: Any) -> list[dict[str, Any]]:
        return self.box.catalog.list(**filters)

    def delete(self, recording_id: str, *, force: bool = False, actor: str = "?") -> dict[str, Any]:
        """Remove a finished recording's media; its metadata stay 40 days with status ``deleted``. A recording
        whose upload is not confirmed is refused unless ``force`` (which cancels the upload)."""
        return self.box.call(lambda: self.box.delete_recording(recording_id, force=force, actor=actor))

    def get(self, recording_id: str) -> dict[str, Any]:
        row = self.box.catalog.get(recording_id)
        if row is None:
            raise LookupError(f"no recording {recording_id!r}")
        return row
