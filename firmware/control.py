"""The control API: the one way in for every front end.

The GPIO panel, MQTT commands and the HTTP API get a ``Control`` and nothing
else: they start, stop, pause, resume and delete recordings, read the catalog,
the state and the media through it, so they behave the same and fail with the
same messages. (DTMF key sequences and calls are the recording session's own,
in the core; the CLI's ``recordings delete`` uses the same delete rule,
``journal.delete_recording``.)

``Control`` is built on two small contracts: ``Recordings``, what the audio
loop offers (``daemon.loop.AudioLoop``: changes run on the loop between two
audio periods, through ``call``, and wait for its answer), and the journal
(``firmware.journal.Journal``: the catalog, the delete rule, the audit log).
Tests hand it the same loop run inline, without threads or sleeping.

Errors are ``ControlError`` (the request cannot be done now: nothing active,
an unknown name, storage full), ``OptionError`` (a bad start option) and
``LookupError`` (no such recording), each with a message that names the
problem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .core import (
    CURRENT,
    ButtonPress,
    ControlError,
    InputMismatch,
    OptionError,
    Pause,
    PauseBehavior,
    PauseButtonPress,
    RecordingOptions,
    Resume,
    StateError,
    Stop,
)
from .core.controls import Control as CoreControl
from .core.events import Finished, Paused, Resumed
from .destinations import Destinations
from .journal import Journal
from .media.convert import media_for

__all__ = ["Control", "ControlError", "Offline", "OptionError", "Recordings", "UpdateError", "Updates", "error_fields"]

SOURCES = ("button", "dtmf", "mqtt", "api", "cli", "auto")


class UpdateError(ControlError):
    """An update the box will not start, and why: ``code`` is a word a program can act on (docs/mqtt.md)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class Updates(Protocol):
    """Field updates asked for from outside (``firmware.update.remote``): one at a time."""

    def start(self, fields: Mapping[str, Any], request_id: str) -> dict[str, Any]: ...


def error_fields(exc: Exception) -> dict[str, str]:
    """What an error answer carries besides its message: for a state clash, the recording's ``state``, the
    ``trigger`` it did not allow and the ``recording``, so HTTP and MQTT callers can tell which clashed; for
    an update, its ``code``."""
    if isinstance(exc, StateError):
        return {"state": exc.state.value, "trigger": exc.trigger.value, "recording": exc.recording}
    if isinstance(exc, UpdateError):
        return {"code": exc.code}
    return {}


def start_request(
    body: Mapping[str, Any],
) -> tuple[str, dict[str, Any], str | None, list[dict[str, Any]], frozenset[str]]:
    """What a start request asks for: native options, or a vendor's document (``firmware.dialects``).

    Returns (action, options, target, unsupported, defaulted): ``action`` is
    "start" or "stop" (TwiML's ``<Stop><Recording>``, Sinch's
    ``StopRecording``), ``unsupported`` lists the document's fields the box
    cannot honour, and why, and ``defaulted`` the options that are the
    vendor's defaults rather than the document's own.
    """
    from . import dialects

    found = dialects.detect(dict(body))
    if found is None:
        options = body.get("options", body) if isinstance(body.get("options"), dict) else body
        return "start", dict(options), None, [], frozenset()
    translation = dialects.translate(*found)
    unsupported = [{"field": u.field, "value": u.value, "reason": u.reason} for u in translation.unsupported]
    return translation.action, dict(translation.options), translation.target, unsupported, translation.defaulted


class Recordings(Protocol):
    """What the audio loop offers the control API."""

    overruns: int

    def call(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` on the loop, between two audio periods, and return its result."""

    def start(self, options: RecordingOptions, source: str) -> str:
        """Start a recording now; its id."""

    def apply(self, control: CoreControl) -> list:
        """Apply a control to the session now; the events it made."""

    def hook(self, off_hook: bool) -> None: ...

    def active(self) -> list[dict[str, Any]]: ...

    def state(self) -> dict[str, Any]: ...


class Offline:
    """``Recordings`` where no audio loop runs (``edge-recorder recordings`` beside a box, or a box that is
    stopped): reading and deleting recordings work, recording does not."""

    overruns = 0

    def call(self, action: Callable[[], Any]) -> Any:
        return action()

    def start(self, options: RecordingOptions, source: str) -> str:
        raise ControlError("nothing records here: start recordings on the running box")

    def apply(self, control: CoreControl) -> list:
        raise ControlError("nothing records here: control recordings on the running box")

    def hook(self, off_hook: bool) -> None:
        raise ControlError("nothing records here")

    def active(self) -> list[dict[str, Any]]:
        return []

    def state(self) -> dict[str, Any]:
        return {"state": "idle", "recordings": [], "delivery": {}}


class Control:
    """Recordings on a running box.

    ``start`` returns the new recording's fields; ``stop``, ``pause`` and
    ``resume`` the fields of the recording they acted on. ``defaults`` gives the
    ``[recording]`` options of the config in force (a reload changes them), and
    ``destinations`` its upload destinations: a start naming any other is refused.
    """

    def __init__(
        self,
        recordings: Recordings,
        journal: Journal,
        defaults: Callable[[], RecordingOptions] = RecordingOptions,
        destinations: Callable[[], Destinations] = Destinations.none,
        updates: Updates | None = None,
    ) -> None:
        self.recordings = recordings
        self.journal = journal
        self.defaults = defaults
        self.destinations = destinations
        self.updates = updates

    # -- changes (run on the loop) ---------------------------------------------------------
    def start(self, options: Mapping[str, Any] | None = None, source: str = "api") -> dict[str, Any]:
        if source not in SOURCES:
            raise ControlError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
        opts = RecordingOptions.from_mapping(dict(options or {}), self.defaults())
        self.destinations().resolve(opts.destination)  # credentials go only to configured destinations
        if opts.status_callback:  # refuse a bad callback now, not when the recording reports
            from .delivery.webhooks import Callback

            Callback.from_options(opts.status_callback, opts.status_callback_method, list(opts.status_callback_events))
        rid = self.recordings.call(lambda: self.recordings.start(opts, source))
        return self.get(rid)

    def request(self, body: Mapping[str, Any], source: str) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
        """A start request as a front end receives it: native options, or a vendor's document, which may
        also stop a recording (TwiML's ``<Stop><Recording>``, Sinch's ``StopRecording``).

        Returns the action taken ("start" or "stop"), the recording's fields and the document's fields the
        box cannot honour (``start_request``).
        """
        action, options, target, unsupported, defaulted = start_request(body)
        if action == "stop":
            return action, self.stop(target or CURRENT), unsupported
        while True:
            try:
                return action, self.start(options, source=source), unsupported
            except InputMismatch as exc:
                if exc.option not in defaulted or exc.option not in options:
                    raise  # the document asked for it: the box says why it cannot
                # The vendor's default, which this input cannot give (TwiML records dual unless told
                # otherwise; a mono line has one track): the box's own default applies, and the answer says so.
                unsupported.append(
                    {
                        "field": exc.option,
                        "value": options.pop(exc.option),
                        "reason": f"the vendor's default, which this box cannot give ({exc}); its own applies",
                    }
                )

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
        def run() -> str:
            events = self.recordings.apply(control)
            done = next((e for e in events if isinstance(e, kind)), None)
            if done is None:
                raise ControlError(f"{type(control).__name__.lower()} had no effect on {control.target!r}")
            return done.recording.id

        return self.get(self.recordings.call(run))

    def button(self) -> None:
        """The record button: start with the ``[recording]`` options, or stop what is active."""
        self.recordings.call(lambda: self.recordings.apply(ButtonPress()))

    def pause_button(self) -> None:
        """The pause button: pause what records, or resume when all are paused."""
        self.recordings.call(lambda: self.recordings.apply(PauseButtonPress()))

    def hook(self, off_hook: bool) -> None:
        """The hook switch changed."""
        self.recordings.call(lambda: self.recordings.hook(off_hook))

    def update(self, fields: Mapping[str, Any], request_id: str = "") -> dict[str, Any]:
        """Start a field update from a bundle's URL (the MQTT ``update`` command); what it answers at once."""
        if self.updates is None:
            raise UpdateError(
                "this box cannot be updated from here: it does not run from an installed slot "
                "(/opt/edge-recorder/slots, made by images/install.sh)",
                code="update_unavailable",
            )
        return self.updates.start(fields, request_id)

    def delete(self, recording_id: str, *, force: bool = False, actor: str = "?") -> dict[str, Any]:
        """Remove a finished recording's media; its metadata stay 40 days with status ``deleted``. A recording
        whose upload is not confirmed is refused unless ``force`` (which cancels the upload)."""
        return self.recordings.call(lambda: self.journal.delete(recording_id, force=force, actor=actor))

    # -- reads -------------------------------------------------------------------------------
    def active(self) -> list[dict[str, Any]]:
        return self.recordings.active()

    def state(self) -> dict[str, Any]:
        """The device state (``<prefix>/<device_id>/state``)."""
        return self.recordings.state()

    def list(self, **filters: Any) -> list[dict[str, Any]]:
        return self.journal.catalog.list(**filters)

    def page(self, **query: Any) -> tuple[list[dict[str, Any]], Any]:
        return self.journal.catalog.page(**query)

    def get(self, recording_id: str) -> dict[str, Any]:
        row = self.journal.catalog.get(recording_id)
        if row is None:
            raise LookupError(f"no recording {recording_id!r}")
        return row

    def public(self, row: dict[str, Any]) -> dict[str, Any]:
        """A recording's fields as the outside sees them (docs/mqtt.md), with a signed media link."""
        return self.journal.public_row(row)

    def media(self, row: dict[str, Any], fmt: str, channels: int | None) -> Path:
        """The recording's media as ``fmt`` with ``channels`` (converted once and cached)."""
        return media_for(row, fmt, channels, self.journal.spool_dir)

    def audit(self, action: str, actor: str, target: str | None = None, detail: str | None = None) -> None:
        """Note a download, a failed login, a config reload in the audit log."""
        self.journal.catalog.audit(action, actor, target, detail)

    # -- the box in Twilio's names (the Twilio-compatible API, beside twilio-format callbacks) ----------
    @property
    def account_sid(self) -> str:
        """The box's Twilio ``AccountSid``, the same as in its twilio-format callbacks."""
        from .delivery.webhooks import account_sid

        return account_sid(self.journal.device_id)

    @staticmethod
    def twilio_source(source: str | None) -> str:
        """A recording's ``source`` as Twilio's (``StartCallRecordingAPI``, ``DialVerb``), as its callbacks say."""
        from .delivery.webhooks import TWILIO_SOURCES

        return TWILIO_SOURCES.get(source or "", "StartCallRecordingAPI")

    @staticmethod
    def twilio_error_code(row: Mapping[str, Any]) -> int | None:
        """Why a recording is absent or failed, as a number of Twilio's error dictionary (its callbacks' too)."""
        from .delivery.webhooks import twilio_error_code

        code = twilio_error_code(str(row.get("status") or ""), row.get("end_reason"))
        return None if code is None else int(code)

    def figures(self) -> dict[str, Any]:
        """The box's figures, for metrics."""
        state = self.state()
        return {
            "by_status": self.journal.catalog.count_by_status(),
            "stored_bytes": self.journal.catalog.stored_bytes(),
            "active": len(state["recordings"]),
            "overruns": self.recordings.overruns,
            "delivery": state["delivery"],
            "state": state,
        }
