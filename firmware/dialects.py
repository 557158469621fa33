"""Vendors' call-control documents as start and stop commands (README, "The local API", Vendor documents).

Theory of operation
-------------------
A start (or stop) command may carry, instead of native options, the document a
central server already writes for one of the cloud platforms: a Vonage NCCO
``record`` action, a SignalWire SWML ``record`` / ``record_call`` (or
``stop_record_call``), a TwiML ``<Start><Recording>`` / ``<Stop><Recording>``,
or a Sinch ``StartRecording`` / ``StopRecording``. ``detect`` finds the
document in a command; ``translate`` maps it, field by field, to the native
start options (``core.options``), gives what it leaves out the vendor's
defaults as its documentation states them, and lists every field the box
cannot honour, with the reason and what the box does instead. Nothing is
dropped silently: a field that is not the vendor's is reported too.

Rules that hold for every dialect:

- A document that cannot be read (wrong type, a value the vendor does not
  allow, bad XML) raises ``DialectError`` naming the dialect, the field and
  what is accepted. A value the vendor allows but the box cannot do (Vonage's
  ``ogg``, Sinch Drive) is an ``Unsupported`` entry instead, and recording
  goes ahead without it.
- A document means on the box what it means on its vendor's platform.
  ``Translation.options`` holds what the document set and, for each field it
  leaves out, the vendor's default where the vendor's documentation states one
  (the "left out" tables below name the section). Where it states no
  default, the option is left out of ``options`` and the box's own default
  applies (``[recording]`` in the config, then ``RecordingOptions``'); the tables say so. A
  field that is given but cannot be honoured gets no vendor default either: it
  is reported, and the box's own applies. A vendor default the input cannot
  give (TwiML's ``dual`` on a mono line) is dropped when the recording starts
  (``Translation.defaulted``; ``Control.request``): the box's own default
  applies and the answer lists it as unsupported. Options are checked and normalised
  by ``RecordingOptions.from_mapping`` (a value the box refuses is a
  ``DialectError`` naming the vendor's field).
- A document's status callbacks go to the URL it names in its vendor's wire
  format: with the URL the document sets ``status_callback_format`` (``vonage``,
  ``signalwire``, ``twilio``; ``sinch`` for Sinch's notification events), which
  ``firmware.delivery.routes`` uses for that callback; ``[events] webhook`` keeps
  ``[events] callback_format``. A callback the box cannot make as asked (a
  relative TwiML URL, Sinch's application callback URL) is reported.
- One recording per command: the first recording instruction in a document is
  used; any further one is reported (send it as a command of its own).
- Everything else in a document (speech, prompts, call flow) is reported as
  unsupported: the box records, it does not run call flows.
- Stopping takes a target: the recording's name, or ``"current"`` (the only
  active recording, Twilio's ``Twilio.CURRENT``; Twilio's Recording resource
  reference, "Update a Recording resource") when the document names none.

Mappings
--------
Vonage NCCO ``record`` action (Vonage's Voice API guide "Recording"; field
names and ranges the guide does not spell out come from Vonage's NCCO
reference, record action). Given as the action object or as an NCCO list
holding it.

================  ==============================  =========================================================
Vonage field      native option                   guide section / note
================  ==============================  =========================================================
format            format                          "File formats": mp3, wav; ogg unsupported (the box's
                                                  format instead)
split             channels = dual                 "Split recording": only ``"conversation"``; caller left
channels          (with split) 1 mono, 2 dual     NCCO reference: 1-32; more than 2 unsupported (two tracks);
                                                  without split it has no effect (unsupported)
endOnSilence      end_on_silence                  "Synchronous recording"
endOnKey          end_on_key                      "Synchronous recording"
timeOut, timeout  max_length                      "Asynchronous recording" (the guide spells it ``timeout``)
beepStart         beep                            NCCO reference ("beep" in the guide's overview)
eventUrl          status_callback,                "Overview": the webhook once the record action ends, so
                  status_callback_events =        it fires for a recording that ends with no input too (the
                  completed absent,               vonage format itself says only a finished recording with
                  status_callback_format =        a file); an array holding one URL (a bare string is
                  vonage                          taken)
eventMethod       status_callback_method          NCCO reference
transcription     unsupported                     the box does not transcribe
================  ==============================  =========================================================

Left out of the action:

================  ===============================  ========================================================
Vonage field      option it sets                   default, where the guide states it
================  ===============================  ========================================================
format            format = mp3                     "File formats": "the default is MP3"
split             channels = mono                  "Overview": "By default all recordings are in a mono
                                                   format"; "File formats": "mono by default"
endOnSilence,     (none)                           not stated: the box's (with neither, the record is
endOnKey                                           asynchronous, "Asynchronous recording")
timeOut           (none)                           not stated: the box's ``max_length``
beepStart         (none)                           not stated: the box's ``beep``
eventUrl,         (none)                           not stated: the box's ``[recording] status_callback``,
eventMethod                                        method and events, in ``[events] callback_format``
================  ===============================  ========================================================

SignalWire SWML (SignalWire's SWML reference, ``record`` method;
``record_call``, ``control_id`` and ``stop_record_call`` come from other pages
of the SWML reference). Given as one instruction (``{"record": {...}}``) or a
whole SWML document, whose ``main`` section is read.

====================  ==================================  =================================================
SWML parameter        native option                       ``record`` page section / note
====================  ==================================  =================================================
record                (foreground, synchronous)           end_on_key ``#`` unless terminators is given
record_call           (background, asynchronous)          SWML reference; nothing added
stereo                channels (true dual, false mono)    "Properties"
format                format                              "Properties": wav, mp3; mp4 unsupported (the box's
                                                          format instead)
direction             track: speak inbound, listen        "Properties"; the track start option
                      outbound, both both
terminators           end_on_key                          "Properties"
beep                  beep                                "Properties"
input_sensitivity     input_sensitivity                   "Properties" (0-100)
initial_timeout       initial_timeout                     "Properties"
end_silence_timeout   end_on_silence                      "Properties"
max_length            max_length                          "Properties"
status_url            status_callback,                    "StatusCallbacks": every state is posted
                      status_callback_events =            (recording, paused, finished, no_input, error),
                      in-progress completed absent,       as ``calling.call.record``
                      status_callback_format =
                      signalwire
control_id            name (record_call);                 SWML reference
                      target (stop_record_call)
====================  ==================================  =================================================

Left out: the ``record`` page's "Properties" states no default for any
parameter (its status callback example shows ``"format": "wav"``,
``"stereo": false`` as values of one recording, not as defaults), so each keeps
the box's own, with one exception:

====================  ===============================  ====================================================
SWML parameter        option it sets                   default, where the ``record`` page shows it
====================  ===============================  ====================================================
terminators           end_on_key = ``#``               ``record`` only: "Examples" ("Press hash to end
                                                       recording" with no terminators given); the
                                                       foreground record is the voicemail case
every other one       (none)                           not stated: the box's (``format`` mp3 unless
                                                       ``[recording]`` says otherwise, ``channels`` mono,
                                                       ...); ``status_url``: the box's status_callback in
                                                       ``[events] callback_format``
====================  ===============================  ====================================================

Twilio TwiML (Twilio's TwiML ``<Recording>`` reference, "Noun attributes" and
"Stop a Recording"). Given as text: a ``<Response>``, or a bare ``<Start>`` /
``<Stop>`` as in that reference.

==============================  =======================  ===========================================
``<Recording>`` attribute       native option            note
==============================  =======================  ===========================================
name                            name                     ``<Stop><Recording name>``: the stop target
recordingStatusCallback         status_callback,         absolute http(s) URL; a relative URL is
                                status_callback_format   unsupported (the box has no base URL): no
                                = twilio                 status callback then
recordingStatusCallbackMethod   status_callback_method
recordingStatusCallbackEvent    status_callback_events   space-separated, as in the reference
trim                            trim
track                           track
channels                        channels
==============================  =======================  ===========================================

Left out of ``<Start><Recording>``: every attribute has its default in the
"Noun attributes" table of Twilio's TwiML ``<Recording>`` reference (and each
attribute's own section).

==============================  ===============================  =====================================
``<Recording>`` attribute       option it sets                   note
==============================  ===============================  =====================================
name                            name = "" (none)
recordingStatusCallback         status_callback = "" (none)      no per-recording callback, not even
                                                                 ``[recording] status_callback``;
                                                                 ``[events] webhook`` still fires
recordingStatusCallbackMethod   status_callback_method = POST
recordingStatusCallbackEvent    status_callback_events =
                                completed
trim                            trim = trim-silence              a recording all silence is ``absent``
track                           track = both
channels                        channels = dual                  needs a 2-channel input: on a mono
                                                                 one the start is refused (send
                                                                 ``channels="mono"``)
==============================  ===============================  =====================================

``recordingChannels`` and ``recordingTrack`` are not attributes of
``<Recording>`` (Twilio's Recording resource reference calls them
``recording_channels`` and ``recording_track``): they are reported, pointing at
the right name.
``<Stop><Recording>`` without a name stops ``"current"``. The XML is read with
``defusedxml`` after refusing documents over ``MAX_TWIML`` characters, and
with DTDs forbidden: TwiML has none, and without one no entity can be expanded
(billion laughs) and no file or URL fetched (external entities). Whatever the
parser refuses is a ``DialectError`` naming what it met.

Sinch (Sinch's Voice guide "Recording calls"). Given as a ``StartRecording`` /
``StopRecording`` instruction ("Recording instructions"), an SVAML response with
``instructions`` and/or an ``action`` with ``"recording": true`` and
``recordingOptions`` (the ACE example), or a bare ``{"recordingOptions":
{...}}`` (the destination examples). Instruction and action names are matched
without regard to case.

==================  ===============================  ==================================================
recordingOptions    native option                    guide section / note
==================  ===============================  ==================================================
destinationUrl      destination                      "DestinationURL": ``s3://`` (and https://);
                                                     ``sdrive://`` unsupported (Sinch's own storage)
credentials         unsupported                      the box takes S3 keys from its config only; the
                                                     value is reported with the secret key masked
format              format                           "Recording options": mp3, wav
notificationEvents  true: status_callback_events =   "Notification events": recording_finished and
                    completed, status_callback_      recording_available are both the box's
                    format = sinch; false:           ``completed`` callback event. Sinch sends them to
                    status_callback = "" (none)      the application's callback URL, which no document
                                                     carries: the box sends them to its own
                                                     ``[recording] status_callback``, and reports
                                                     ``notificationEvents`` saying so
==================  ===============================  ==================================================

Left out of the recording options:

==================  ===============================  ==================================================
recordingOptions    option it sets                   default, where the guide states it
==================  ===============================  ==================================================
format              format = mp3                     "Recording options": 'Default value is "mp3"'
notificationEvents  as for true, above               "Recording options": 'Default value is "true"'
destinationUrl      (none)                           not stated (the options are "required"): the
                                                     box's ``destination``
==================  ===============================  ==================================================

``StopRecording`` stops ``"current"`` (Sinch records a call once).

Example:

>>> t = translate("twilio", '<Start><Recording name="desk" channels="mono" timeout="5"/></Start>')
>>> t.action, t.options["name"], t.options["channels"], t.options["trim"]  # trim: left out, TwiML's default
('start', 'desk', 'mono', 'trim-silence')
>>> t.unsupported[0].field
'timeout'
>>> detect({"op": "start", "sinch": {"name": "StopRecording"}})
('sinch', {'name': 'StopRecording'})
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import defusedxml.ElementTree as SafeET
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from .core.options import OptionError, RecordingOptions

DIALECTS = ("vonage", "signalwire", "twilio", "sinch")
# The key that carries each dialect's document in a command.
WRAPPERS = {"ncco": "vonage", "swml": "signalwire", "twiml": "twilio", "sinch": "sinch"}
CURRENT = "current"
MAX_TWIML = 64 * 1024  # characters; a <Start><Recording> document is a few hundred

_NATIVE = frozenset(f.name for f in fields(RecordingOptions))
_ONE_PER_COMMAND = (
    "one recording per command: the first recording instruction is used; send this one as a command of its own"
)
_NOT_RECORDING = "the box only records: it does not run {what}"
_FORMATS_REASON = "the box writes wav or mp3 only; it records in its configured format instead (mp3 unless set)"
_DESTINATION_REASON = (
    "the box uploads to https://, s3:// or mqtt destinations; it uses its configured [upload] destination instead"
)


class DialectError(ValueError):
    """A vendor document the box cannot read: names the dialect, the field and what is accepted."""

    def __init__(self, dialect: str, field: str, problem: str, accepted: str) -> None:
        self.dialect, self.field, self.problem, self.accepted = dialect, field, problem, accepted
        super().__init__(f"{dialect}: {field}: {problem}; expected {accepted}")


@dataclass(frozen=True)
class Unsupported:
    """A field of a vendor document the box cannot honour, and why (what it does instead)."""

    field: str
    value: Any
    reason: str


@dataclass(frozen=True)
class Translation:
    """A vendor document as a native command.

    ``options`` are native start options (``core.options``): those the document
    set and the vendor's defaults its documentation states for those it left
    out, valid for ``RecordingOptions.from_mapping``. ``target`` is the
    recording a stop acts on: a name or ``"current"``.
    """

    action: str
    options: dict[str, Any]
    target: str | None = None
    unsupported: tuple[Unsupported, ...] = ()
    dialect: str = ""
    #: The options set from the vendor's defaults, not by the document: where the box cannot give one (a
    #: TwiML recording is dual unless it says otherwise; a mono line has one track), its own default applies.
    defaulted: frozenset[str] = frozenset()


def translate(dialect: str, document: Any) -> Translation:
    """Map ``document`` (a dict or list for JSON dialects, text for TwiML) to native options."""
    reader = _READERS.get(dialect)
    if reader is None:
        raise DialectError(str(dialect), "dialect", f"{_show(dialect)} is not known", "one of " + ", ".join(DIALECTS))
    draft = _Draft(dialect)
    reader(draft, document)
    return draft.finish()


def detect(command: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The (dialect, document) a command carries, or None for a native command.

    A command carries at most one document (``ncco``, ``swml``, ``twiml`` or
    ``sinch``), and no native options beside it: they would be ignored, so a
    command with both is refused rather than half obeyed.
    """
    if not isinstance(command, Mapping):
        return None
    found = [key for key in WRAPPERS if key in command]
    if not found:
        return None
    if len(found) > 1:
        raise DialectError(
            WRAPPERS[found[0]], "command", f"carries {' and '.join(found)}", "one of ncco, swml, twiml or sinch"
        )
    native = sorted(key for key in command if key == "options" or key in _NATIVE)
    if native:
        raise DialectError(
            WRAPPERS[found[0]],
            native[0],
            f"native options beside a {found[0]} document would be ignored",
            "either native options or one vendor document",
        )
    return WRAPPERS[found[0]], command[found[0]]


# -- the translation being built -------------------------------------------------------------


@dataclass
class _Draft:
    dialect: str
    action: str = "start"
    target: str | None = None
    options: dict[str, tuple[Any, str]] = field(default_factory=dict)  # option -> (value, vendor field)
    unsupported: list[Unsupported] = field(default_factory=list)
    defaulted: set[str] = field(default_factory=set)  # options set from the vendor's defaults

    def set(self, option: str, value: Any, source: str) -> None:
        self.options[option] = (value, source)
        self.defaulted.discard(option)

    def skip(self, name: str, value: Any, reason: str) -> None:
        self.unsupported.append(Unsupported(name, _scrubbed(value), reason))

    def fail(self, name: str, problem: str, accepted: str) -> DialectError:
        return DialectError(self.dialect, name, problem, accepted)

    def defaults(self, given: Collection[str], table: Mapping[str, tuple[str, Any]]) -> None:
        """For each vendor field of ``table`` the document leaves out, the option its vendor says it defaults to.

        A field that is there but cannot be honoured (reported) gets no default: the box's own applies.
        """
        for name, (option, value) in table.items():
            if name not in given:
                self.set(option, value, name)
                self.defaulted.add(option)

    def finish(self) -> Translation:
        options: dict[str, Any] = {}
        for option, (value, source) in self.options.items():
            try:
                parsed = RecordingOptions.from_mapping({option: value})
            except OptionError as exc:
                raise self.fail(source, f"{_show(exc.value)} is not valid", exc.allowed) from None
            options[option] = _plain(getattr(parsed, option))
        RecordingOptions.from_mapping(options)  # all together, as the control will
        return Translation(
            self.action, options, self.target, tuple(self.unsupported), self.dialect, frozenset(self.defaulted)
        )

    # typed reads of vendor values: a wrong type is the vendor's field named in the error
    def text(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(name, f"{_show(value)} is not text", "a string")
        return value

    def flag(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(name, f"{_show(value)} is not a boolean", "true or false")
        return value

    def number(self, name: str, value: Any, accepted: str = "a number of seconds") -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"{_show(value)} is not a number", accepted)
        return value

    def choice(self, name: str, value: Any, allowed: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value.lower() not in allowed:
            raise self.fail(name, f"{_show(value)} is not valid", "one of " + ", ".join(allowed))
        return value.lower()

    def callback_url(self, name: str, value: Any, relative_ok: bool = False) -> str | None:
        """An absolute http(s) URL, or None (reported) for a relative one where the vendor allows it."""
        url = self.text(name, value)
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc:
            return url
        if relative_ok and not parts.scheme and not parts.netloc:
            self.skip(
                name,
                value,
                "a relative URL needs the address the document was fetched from, which the box does not have, "
                "so this recording sends no status callback ([events] webhook still gets its events); "
                "give an absolute https:// URL",
            )
            return None
        raise self.fail(name, f"{_show(value)} is not an absolute web address", "an http:// or https:// URL")


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value: Any) -> str:
    """What a value is, for messages; text is never echoed (it may be a secret)."""
    return {dict: "an object", list: "a list", str: "text"}.get(type(value)) or _show(value)


def _scrubbed(value: Any) -> Any:
    """``value`` with any ``credentials`` masked, for reporting parts of a document back."""
    if isinstance(value, dict):
        return {k: _masked(v) if k == "credentials" and isinstance(v, str) else _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


# -- Vonage: NCCO record action (Vonage's Voice API guide "Recording") ------------------------

# Vonage's guide: "the default is MP3" ("File formats"); mono unless split ("Overview": "By default all
# recordings are in a mono format"). It states no default for the other fields.
_VONAGE_DEFAULTS = {"format": ("format", "mp3"), "split": ("channels", "mono")}


def _vonage(d: _Draft, document: Any) -> None:
    if isinstance(document, list):
        found = []
        for index, action in enumerate(document):
            where = f"ncco[{index}]"
            if not isinstance(action, dict):
                raise d.fail(where, f"is {_kind(action)}", 'an NCCO action object such as {"action": "record"}')
            name = action.get("action")
            if name == "record":
                found.append((where, action))
            elif name == "conversation" and action.get("record") is True:
                d.skip(
                    where,
                    action,
                    "a named conversation (conference) is recorded by Vonage's platform; "
                    "the box records the line it is connected to: send a record action",
                )
            else:
                d.skip(where, action, _NOT_RECORDING.format(what=f"the NCCO's {name!r} action"))
        if not found:
            raise d.fail("ncco", "has no record action", 'a list with one {"action": "record", ...}')
        for where, action in found[1:]:
            d.skip(where, action, _ONE_PER_COMMAND)
        action = found[0][1]
    elif isinstance(document, dict):
        action = document
        if action.get("action") != "record":
            raise d.fail("action", f"{_show(action.get('action'))} is not a record action", '"record"')
    else:
        raise d.fail("ncco", f"is {_kind(document)}", "a record action object or an NCCO list holding one")

    if "timeOut" in action and "timeout" in action:
        raise d.fail("timeout", "is given twice (timeOut and timeout)", "one of them")
    split = channels = None
    for key, value in action.items():
        if key == "action":
            continue
        if key == "format":
            fmt = d.choice(key, value, ("mp3", "wav", "ogg"))
            if fmt == "ogg":
                d.skip(key, value, _FORMATS_REASON)
            else:
                d.set("format", fmt, key)
        elif key == "split":
            split = d.choice(key, value, ("conversation",))
        elif key == "channels":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
                raise d.fail(key, f"{_show(value)} is not valid", "a whole number from 1 to 32")
            channels = value
        elif key == "endOnSilence":
            d.set("end_on_silence", d.number(key, value), key)
        elif key == "endOnKey":
            d.set("end_on_key", d.text(key, value), key)
        elif key in ("timeOut", "timeout"):
            d.set("max_length", d.number(key, value), key)
        elif key == "beepStart":
            d.set("beep", d.flag(key, value), key)
        elif key == "eventUrl":
            urls = [value] if isinstance(value, str) else value
            if not isinstance(urls, list) or len(urls) != 1:
                raise d.fail(key, f"{_show(value)} is not valid", "an array holding one URL")
            url = d.callback_url(key, urls[0])
            d.set("status_callback", url, key)
            # Vonage calls eventUrl whenever the record action ends, whatever it recorded.
            d.set("status_callback_events", ["completed", "absent"], key)
            d.set("status_callback_format", "vonage", key)
        elif key == "eventMethod":
            d.set("status_callback_method", d.text(key, value), key)
        elif key == "transcription":
            d.skip(
                key,
                value,
                "the box does not transcribe; transcribe the uploaded file (channels dual keeps the parties apart)",
            )
        else:
            d.skip(key, value, "not a field of vonage's record action; it has no effect")

    if split is not None:
        if channels == 1:
            d.set("channels", "mono", "channels")
        else:
            d.set("channels", "dual", "split")
        if channels is not None and channels > 2:
            d.skip(
                "channels",
                channels,
                "the box has two tracks: a split recording has two channels, left inbound (the far end) "
                "and right outbound (the local side)",
            )
    elif channels is not None:
        d.skip(
            "channels", channels, 'Vonage uses channels only with split: "conversation"; without it there is no effect'
        )
    d.defaults(action, _VONAGE_DEFAULTS)


# -- SignalWire: SWML record / record_call / stop_record_call (SignalWire's SWML reference) -----

_SWML_METHODS = ("record", "record_call", "stop_record_call")
_DIRECTIONS = {"speak": "inbound", "listen": "outbound", "both": "both"}
# The SWML record page's "Properties" state no defaults. The foreground record is the voicemail case and
# ends on "#": the page's own example ("Press hash to end recording") relies on it, which also makes it
# synchronous here.
_SWML_RECORD_DEFAULTS = {"terminators": ("end_on_key", "#")}


def _signalwire(d: _Draft, document: Any) -> None:
    if isinstance(document, str):
        raise d.fail("document", "is text", "a JSON object: SWML in YAML is not read, send its JSON form")
    if not isinstance(document, dict):
        raise d.fail("document", f"is {_kind(document)}", 'a JSON object: an SWML document or {"record": {...}}')
    if "sections" in document or "version" in document:
        instructions = _swml_main(d, document)
    else:
        instructions = [("document", document)]
        if len(document) != 1 or next(iter(document)) not in _SWML_METHODS:
            raise d.fail(
                "document",
                f"has {', '.join(map(str, document)) or 'no method'}",
                "one of " + ", ".join(_SWML_METHODS) + ' as the only key, such as {"record": {...}}',
            )
    found = []
    for where, instruction in instructions:
        method, params = _swml_method(d, where, instruction)
        if method in _SWML_METHODS:
            found.append((where, method, params, instruction))
        else:
            d.skip(where, instruction, _NOT_RECORDING.format(what=f"SWML's {method} method"))
    if not found:
        raise d.fail("sections.main", "has no record, record_call or stop_record_call", "one of them")
    for where, _, _, instruction in found[1:]:
        d.skip(where, instruction, _ONE_PER_COMMAND)
    _, method, params, _ = found[0]
    if method == "stop_record_call":
        _swml_stop(d, params)
    else:
        _swml_record(d, method, params)


def _swml_main(d: _Draft, document: dict) -> list[tuple[str, Any]]:
    for key, value in document.items():
        if key == "version":
            d.text(key, value)
        elif key != "sections":
            d.skip(key, value, "not a field of signalwire's SWML document; it has no effect")
    sections = document.get("sections")
    if not isinstance(sections, dict) or not isinstance(sections.get("main"), list):
        raise d.fail("sections.main", "is missing or not a list", "an SWML document with a main section (a list)")
    for name, section in sections.items():
        if name != "main":
            d.skip(
                f"sections.{name}",
                section,
                "the box reads only the main section: it runs no SWML, so other sections are never reached",
            )
    return [(f"sections.main[{i}]", item) for i, item in enumerate(sections["main"])]


def _swml_method(d: _Draft, where: str, instruction: Any) -> tuple[str, Any]:
    if isinstance(instruction, str):  # a method without parameters, e.g. "answer"
        return instruction, {}
    if not isinstance(instruction, dict) or len(instruction) != 1:
        raise d.fail(
            where,
            f"{_show(instruction)} is not an SWML instruction",
            'an object with one method, e.g. {"record": {...}}',
        )
    method, params = next(iter(instruction.items()))
    if method in _SWML_METHODS:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise d.fail(method, f"is {_kind(params)}", f"an object of {method} parameters")
    return method, params


def _swml_record(d: _Draft, method: str, params: dict) -> None:
    element = f"signalwire's {method}"
    for key, value in params.items():
        if key == "stereo":
            d.set("channels", "dual" if d.flag(key, value) else "mono", key)
        elif key == "format":
            fmt = d.choice(key, value, ("wav", "mp3", "mp4"))
            if fmt == "mp4":
                d.skip(key, value, _FORMATS_REASON)
            else:
                d.set("format", fmt, key)
        elif key == "direction":
            d.set("track", _DIRECTIONS[d.choice(key, value, tuple(_DIRECTIONS))], key)
        elif key == "terminators":
            d.set("end_on_key", d.text(key, value), key)
        elif key == "beep":
            d.set("beep", d.flag(key, value), key)
        elif key == "input_sensitivity":
            d.set("input_sensitivity", d.number(key, value, "a number from 0 to 100"), key)
        elif key == "initial_timeout":
            d.set("initial_timeout", d.number(key, value), key)
        elif key == "end_silence_timeout":
            d.set("end_on_silence", d.number(key, value), key)
        elif key == "max_length":
            d.set("max_length", d.number(key, value), key)
        elif key == "status_url":
            d.set("status_callback", d.callback_url(key, value), key)
            # SignalWire posts every state change: recording, paused, finished, no_input, error.
            d.set("status_callback_events", ["in-progress", "completed", "absent"], key)
            d.set("status_callback_format", "signalwire", key)
        elif key == "control_id" and method == "record_call":
            d.set("name", d.text(key, value), key)
        else:
            d.skip(key, value, f"not a field of {element}; it has no effect")
    if method == "record":
        d.defaults(params, _SWML_RECORD_DEFAULTS)


def _swml_stop(d: _Draft, params: dict) -> None:
    d.action, d.target = "stop", CURRENT
    for key, value in params.items():
        if key == "control_id":
            d.target = d.text(key, value) or CURRENT
        else:
            d.skip(key, value, "not a field of signalwire's stop_record_call; it has no effect")


# -- Twilio: TwiML <Start><Recording> / <Stop><Recording> (Twilio's TwiML <Recording> reference) --

_TWIML_EXAMPLE = '<Response><Start><Recording name="..."/></Start></Response>'
# Twilio's TwiML <Recording> reference, "Noun attributes": the default of every <Recording> attribute
# ("none" for name and callback).
_TWIML_DEFAULTS = {
    "name": ("name", ""),
    "recordingStatusCallback": ("status_callback", ""),
    "recordingStatusCallbackMethod": ("status_callback_method", "POST"),
    "recordingStatusCallbackEvent": ("status_callback_events", ["completed"]),
    "trim": ("trim", "trim-silence"),
    "track": ("track", "both"),
    "channels": ("channels", "dual"),
}
# Names people carry over from Twilio's Recording resource (its reference) or <Record>.
_TWIML_HINTS = {
    "recordingChannels": "channels",
    "recordingTrack": "track",
    "recordingTrim": "trim",
    "recording_channels": "channels",
    "recording_track": "track",
    "recording_status_callback": "recordingStatusCallback",
    "recording_status_callback_event": "recordingStatusCallbackEvent",
    "recording_status_callback_method": "recordingStatusCallbackMethod",
}


def _twilio(d: _Draft, document: Any) -> None:
    root = _parse_twiml(d, document)
    if root.tag == "Response":
        for name, value in root.attrib.items():
            d.skip(f"Response@{name}", value, "not an attribute of twilio's <Response>; it has no effect")
        verbs = [(f"Response/{step}", verb) for step, verb in _steps(root)]
    elif root.tag in ("Start", "Stop"):
        verbs = [(root.tag, root)]
    else:
        raise d.fail("document", f"<{root.tag}> is not TwiML's <Response>, <Start> or <Stop>", _TWIML_EXAMPLE)
    found = []
    for path, verb in verbs:
        if verb.tag not in ("Start", "Stop"):
            d.skip(path, _element_value(verb), _NOT_RECORDING.format(what=f"TwiML's <{verb.tag}> verb"))
            continue
        for name, value in verb.attrib.items():
            d.skip(f"{path}@{name}", value, f"<{verb.tag}> attributes apply to media streams; the box only records")
        for step, noun in _steps(verb):
            if noun.tag == "Recording":
                found.append((verb.tag, noun, f"{path}/{step}"))
            else:
                d.skip(f"{path}/{step}", _element_value(noun), _NOT_RECORDING.format(what=f"<{verb.tag}><{noun.tag}>"))
    if not found:
        raise d.fail("document", "has no <Start><Recording> or <Stop><Recording>", _TWIML_EXAMPLE)
    for _, noun, path in found[1:]:
        d.skip(path, dict(noun.attrib), _ONE_PER_COMMAND)
    verb, noun, path = found[0]
    if (noun.text or "").strip() or len(noun):
        d.skip(path, _element_value(noun), "<Recording> takes attributes only; its content has no effect")
    if verb == "Stop":
        _twiml_stop(d, noun.attrib)
    else:
        _twiml_start(d, noun.attrib)


def _parse_twiml(d: _Draft, document: Any) -> ET.Element:
    if isinstance(document, bytes):
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError:
            raise d.fail("document", "is not UTF-8", "TwiML text in UTF-8") from None
    if not isinstance(document, str):
        raise d.fail("document", f"is {_kind(document)}", "TwiML text such as " + _TWIML_EXAMPLE)
    if len(document) > MAX_TWIML:
        raise d.fail("document", f"is {len(document)} characters long", f"at most {MAX_TWIML}")
    try:
        data = document.encode("utf-8")  # a JSON string can hold a lone surrogate; the parser cannot
    except UnicodeEncodeError as exc:
        raise d.fail("document", f"is not Unicode text (a lone surrogate at {exc.start})", "TwiML text") from None
    try:
        return SafeET.fromstring(data, forbid_dtd=True)
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as exc:
        if isinstance(exc, DTDForbidden):
            what = f"a <!DOCTYPE {exc.name}> declaration"
        elif isinstance(exc, EntitiesForbidden):
            what = f"an <!ENTITY {exc.name}> declaration"
        else:
            what = f"an external reference to {exc.sysid!r}"
        raise d.fail(
            "document", f"has {what}", "TwiML without a DTD (refused so that no entity is expanded and no file fetched)"
        ) from None
    except ET.ParseError as exc:
        problem = _parse_problem(data, exc)
        raise d.fail("document", f"is not well-formed XML ({problem})", "TwiML such as " + _TWIML_EXAMPLE) from None


def _parse_problem(data: bytes, error: ET.ParseError) -> str:
    """Expat's words and where it stopped, and the markup found there when it is a name (``at <!ENTITY``), so the
    message says what broke without echoing the document's text, which may hold a callback URL's secrets."""
    problem = str(error).partition(":")[0]
    line, column = error.position
    lines = data.split(b"\n")
    rest = lines[line - 1][column:] if 0 < line <= len(lines) else b""
    markup = re.match(rb"<[!?/]?[A-Za-z_][\w.:-]{0,30}", rest)
    at = f", at {markup.group().decode()}" if markup else ""
    return f"{problem}: line {line}, column {column}{at}"


def _steps(parent: ET.Element) -> list[tuple[str, ET.Element]]:
    """Children with XPath-like steps: ``Say``, or ``Start[2]`` where a tag repeats."""
    tags = [child.tag for child in parent]
    seen: dict[str, int] = {}
    steps = []
    for child in parent:
        seen[child.tag] = seen.get(child.tag, 0) + 1
        steps.append((f"{child.tag}[{seen[child.tag]}]" if tags.count(child.tag) > 1 else child.tag, child))
    return steps


def _element_value(element: ET.Element) -> Any:
    text = (element.text or "").strip()
    return text or dict(element.attrib)


def _twiml_start(d: _Draft, attributes: Mapping[str, str]) -> None:
    for key, value in attributes.items():
        if key == "name":
            d.set("name", value, key)
        elif key == "recordingStatusCallback":
            url = d.callback_url(key, value, relative_ok=True)
            if url is None:  # reported: no callback, rather than one the document did not name
                d.set("status_callback", "", key)
            else:
                d.set("status_callback", url, key)
                d.set("status_callback_format", "twilio", key)
        elif key == "recordingStatusCallbackMethod":
            d.set("status_callback_method", value, key)
        elif key == "recordingStatusCallbackEvent":
            d.set("status_callback_events", value, key)
        elif key == "trim":
            d.set("trim", d.choice(key, value, ("trim-silence", "do-not-trim")), key)
        elif key == "track":
            d.set("track", d.choice(key, value, ("inbound", "outbound", "both")), key)
        elif key == "channels":
            d.set("channels", d.choice(key, value, ("mono", "dual")), key)
        elif key in _TWIML_HINTS:
            d.skip(key, value, f"not an attribute of twilio's <Recording>; did you mean {_TWIML_HINTS[key]}?")
        else:
            d.skip(key, value, "not an attribute of twilio's <Recording>; it has no effect")
    d.defaults(attributes, _TWIML_DEFAULTS)


def _twiml_stop(d: _Draft, attributes: Mapping[str, str]) -> None:
    d.action, d.target = "stop", CURRENT
    for key, value in attributes.items():
        if key == "name":
            d.target = value or CURRENT
        else:
            d.skip(
                key, value, "only name applies to <Stop><Recording>; the recording keeps the settings it started with"
            )


# -- Sinch: StartRecording / StopRecording, recordingOptions (Sinch's "Recording calls") ------

_SINCH_SHAPES = (
    '{"name": "StartRecording", "options": {...}}, {"name": "StopRecording"}, '
    '{"instructions": [...], "action": {...}} or {"recordingOptions": {...}}'
)
# Sinch's Voice guide "Recording calls", "Recording options": format 'Default value is "mp3"';
# notificationEvents 'Default value is "true"' (in _sinch_options). It states none for destinationUrl and
# credentials.
_SINCH_DEFAULTS = {"format": ("format", "mp3")}
_SINCH_NOTIFY_REASON = (
    "Sinch sends recording_finished and recording_available to the application's callback URL, which a "
    "document does not carry: the box sends them in Sinch's form to its own [recording] status_callback, "
    "and to none when that is empty"
)
_SINCH_ACTION_REASON = "the box only records: it does not control the call, so of Sinch's action only recording and recordingOptions are used"


def _sinch(d: _Draft, document: Any) -> None:
    if not isinstance(document, dict):
        raise d.fail("document", f"is {_kind(document)}", _SINCH_SHAPES)
    found: list[tuple[str, str, Any, Any]] = []  # (where, "start"|"stop", recordingOptions or None, as given)
    if "name" in document:
        _sinch_instruction(d, "", document, found)
    else:
        for key, value in document.items():
            if key == "instructions":
                if not isinstance(value, list):
                    raise d.fail(key, f"is {_kind(value)}", "a list of instruction objects")
                for index, instruction in enumerate(value):
                    _sinch_instruction(d, f"instructions[{index}]", instruction, found)
            elif key == "action":
                _sinch_action(d, value, found)
            elif key == "recordingOptions":
                found.append((key, "start", _options_object(d, key, value), value))
            else:
                d.skip(key, value, "not a field of sinch's callback response; it has no effect")
    if not found:
        raise d.fail("document", "has no StartRecording, StopRecording or recording action", _SINCH_SHAPES)
    for where, _, _, given in found[1:]:
        d.skip(where, given, _ONE_PER_COMMAND)
    _, action, options, _ = found[0]
    if action == "stop":
        d.action, d.target = "stop", CURRENT
    else:
        _sinch_options(d, options)


def _sinch_instruction(d: _Draft, where: str, instruction: Any, found: list) -> None:
    at = where + "." if where else ""
    if not isinstance(instruction, dict):
        raise d.fail(
            where or "document", f"is {_kind(instruction)}", 'an instruction object such as {"name": "StopRecording"}'
        )
    name = d.text(at + "name", instruction.get("name"))
    kind = {"startrecording": "start", "stoprecording": "stop"}.get(name.lower())
    if kind is None:
        if not where:
            raise d.fail("name", f"{_show(name)} is not a recording instruction", "StartRecording or StopRecording")
        d.skip(where, instruction, _NOT_RECORDING.format(what=f"Sinch's {name} instruction"))
        return
    for key, value in instruction.items():
        if key == "name" or (key == "options" and kind == "start"):
            continue
        d.skip(at + key, value, f"not a field of sinch's {name} instruction; it has no effect")
    options = _options_object(d, at + "options", instruction.get("options", {})) if kind == "start" else None
    found.append((where or "document", kind, options, instruction))


def _sinch_action(d: _Draft, action: Any, found: list) -> None:
    if not isinstance(action, dict):
        raise d.fail("action", f"is {_kind(action)}", 'an SVAML action object such as {"name": "Continue"}')
    recording = action.get("recording", False)
    if not d.flag("action.recording", recording):
        d.skip("action", action, _SINCH_ACTION_REASON)
        return
    for key, value in action.items():
        if key not in ("recording", "recordingOptions"):
            d.skip(f"action.{key}", value, _SINCH_ACTION_REASON)
    options = _options_object(d, "action.recordingOptions", action.get("recordingOptions", {}))
    found.append(("action", "start", options, action))


def _options_object(d: _Draft, where: str, options: Any) -> dict:
    if isinstance(options, list) and len(options) == 1:  # Sinch's guide writes the type as [RecordingOptions]
        options = options[0]
    if not isinstance(options, dict):
        raise d.fail(
            where,
            f"is {_kind(options)}, not recording options",
            "an object with destinationUrl, credentials, format, notificationEvents",
        )
    return options


def _sinch_options(d: _Draft, options: dict) -> None:
    for key, value in options.items():
        if key == "destinationUrl":
            url = d.text(key, value)
            if url.lower().startswith("sdrive://"):
                d.skip(
                    key, value, "Sinch Drive is Sinch's own storage, which the box cannot reach; " + _DESTINATION_REASON
                )
            elif re.match(r"^(https?|s3)://\S+$", url) or url == "mqtt":
                d.set("destination", url, key)
            else:
                d.skip(key, value, _DESTINATION_REASON)
        elif key == "credentials":
            if not isinstance(value, str):
                raise d.fail(key, f"is {_kind(value)}", "text: AccessKey:SecretKey:Region")
            d.skip(
                key,
                _masked(value),
                "the box never takes storage credentials in a command: it uses [upload] s3_access_key, "
                "s3_secret_key and s3_region from its config",
            )
        elif key == "format":
            d.set("format", d.choice(key, value, ("mp3", "wav")), key)
        elif key == "notificationEvents":
            d.flag(key, value)  # checked here; used below, given or by default
        else:
            d.skip(key, value, "not a field of sinch's recordingOptions; it has no effect")
    d.defaults(options, _SINCH_DEFAULTS)
    if options.get("notificationEvents", True):
        # recording_finished and recording_available are both the "completed" callback event.
        d.set("status_callback_events", ["completed"], "notificationEvents")
        d.set("status_callback_format", "sinch", "notificationEvents")
        d.skip("notificationEvents", True, _SINCH_NOTIFY_REASON)
    else:
        d.set("status_callback", "", "notificationEvents")


def _masked(credentials: str) -> str:
    """Credentials with the secret key hidden: the access key and region say which ones they were."""
    parts = credentials.split(":")
    return f"{parts[0]}:***:{parts[2]}" if len(parts) == 3 else "***"


_READERS = {"vonage": _vonage, "signalwire": _signalwire, "twilio": _twilio, "sinch": _sinch}
