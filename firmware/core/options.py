"""Recording start options: one definition, validated once.

The same names are used by config defaults, CLI flags, MQTT commands and the
HTTP API. ``RecordingOptions.from_mapping`` takes loosely typed values (strings
from a command line, JSON numbers) and raises ``OptionError`` naming the option,
the value and what would be accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from .dtmf import KEYS


class OptionError(ValueError):
    """A start option with a value that cannot be used."""

    def __init__(self, option: str, value: Any, allowed: str) -> None:
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(f"{option}: {value!r} is not valid; expected {allowed}")


class Format(StrEnum):
    WAV = "wav"
    MP3 = "mp3"


class Channels(StrEnum):
    MONO = "mono"
    DUAL = "dual"


class Track(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    BOTH = "both"


class Trim(StrEnum):
    TRIM_SILENCE = "trim-silence"
    DO_NOT_TRIM = "do-not-trim"


class PauseBehavior(StrEnum):
    SILENCE = "silence"
    SKIP = "skip"


CALLBACK_EVENTS = ("in-progress", "completed", "absent")
#: The wire formats of status callbacks (README, "Delivery: what central servers see"):
#: ``[events] callback_format`` for the box, and the ``status_callback_format`` start option for one
#: recording's own callback. Declared here, below delivery, for the option to check;
#: ``firmware.delivery.webhooks.FORMATS`` renders each (a test keeps them equal).
CALLBACK_FORMATS = ("native", "twilio", "signalwire", "sinch", "vonage")
MAX_PRE_ROLL = 30.0


@dataclass(frozen=True, slots=True)
class RecordingOptions:
    """Everything a recording can be started with; defaults are the box's own (``[recording]`` may change them)."""

    name: str = ""
    format: Format = Format.MP3
    sample_rate: int = 16000
    channels: Channels = Channels.MONO
    track: Track = Track.BOTH
    beep: bool = False
    warning_tone_interval: float = 0.0
    end_on_key: str = ""
    end_on_silence: float = 0.0
    input_sensitivity: float = 44.0
    initial_timeout: float = 0.0
    max_length: float = 7200.0
    trim: Trim = Trim.DO_NOT_TRIM
    pre_roll: float = 0.0
    mp3_bitrate: int = 32  # kbit/s per channel
    destination: str = ""
    status_callback: str = ""
    status_callback_events: tuple[str, ...] = field(default=("completed",))
    status_callback_method: str = "POST"
    status_callback_format: str = ""  # "": [events] callback_format

    @property
    def synchronous(self) -> bool:
        """A recording with an end condition of its own (the voicemail case)."""
        return bool(self.end_on_key) or self.end_on_silence > 0

    @property
    def channel_count(self) -> int:
        return 2 if self.channels is Channels.DUAL else 1

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: RecordingOptions | None = None) -> RecordingOptions:
        """Build options from ``values`` over ``base`` (or the defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(unknown[0], values[unknown[0]], "one of the start options: " + ", ".join(sorted(known)))
        changes = {key: _PARSERS[key](key, value) for key, value in values.items()}
        return replace(base or cls(), **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


#: What each start option means, in words that suit both of their readers: `edge-recorder record --help`
#: (an audio file) and the configuration reference (docs/configuration.md, the box). Both add the default
#: and ``accepted(option)``, so neither belongs here; a test refuses an option without a line here.
OPTION_HELP = {
    "name": "name of the recording, unique among active recordings; stop and pause can address it by name",
    "format": "file format: WAV (16-bit PCM) or MP3 (constant bit rate)",
    "sample_rate": "sample rate of the file in Hz",
    "channels": "mono mixes the recorded tracks; dual (split recording) puts inbound left and outbound right, "
    "and needs an input with two channels, one per track",
    "track": "what is recorded: inbound (the far party), outbound (the local party and the box's tones) or both",
    "beep": "a beep on the outbound track (and the playback device) when recording starts",
    "warning_tone_interval": "seconds between short tones played while recording, for consent rules; 0: off",
    "end_on_key": "any of these DTMF keys ends the recording; the key's tone is left out of the file",
    "end_on_silence": "end the recording after this many seconds of continuous silence; 0: off",
    "input_sensitivity": "how sensitive the speech/silence detector is; higher: quieter sounds count as speech",
    "initial_timeout": "no speech within this many seconds ends the recording as no_input (status absent); 0: off",
    "max_length": "hard cap on the length of a recording, in seconds",
    "trim": "trim-silence drops leading and trailing silence from the finished file",
    "pre_roll": "seconds of audio from before the start that the recording includes",
    "mp3_bitrate": "MP3 bit rate",
    "destination": "where the box uploads the finished file: a configured destination's name, mqtt, or a URL "
    "under a configured destination; empty: [upload] destination",
    "status_callback": "URL the box tells about this recording's status changes",
    "status_callback_events": "which statuses fire the status callback",
    "status_callback_method": "HTTP method of the status callback",
    "status_callback_format": 'wire format of the status callback (README, "Delivery: what central servers '
    "see\"); a vendor's document sets its vendor's",
}


#: A value no parser accepts: parsing it yields the parser's own words for what it does accept.
_UNACCEPTABLE = object()


def accepted(option: str) -> str:
    """What the start option ``option`` accepts, in the words of its ``OptionError``.

    >>> accepted("format")
    'one of wav, mp3'
    """
    try:
        _PARSERS[option](option, _UNACCEPTABLE)
    except OptionError as exc:
        return exc.allowed
    raise AssertionError(f"the start option {option} accepts anything")


def _enum(kind: type[StrEnum]):
    def parse(key: str, value: Any):
        try:
            return kind(str(value).lower())
        except ValueError:
            raise OptionError(key, value, "one of " + ", ".join(m.value for m in kind)) from None

    return parse


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise OptionError(key, value, "true or false")


def _seconds(low: float = 0.0, high: float = math.inf, positive: bool = False):
    def parse(key: str, value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit integer
            number = math.nan
        if (
            isinstance(value, bool)
            or not math.isfinite(number)
            or not low <= number <= high
            or (positive and number <= 0)
        ):
            bound = f"up to {high:g}" if math.isfinite(high) else "or more"
            raise OptionError(key, value, f"a number of seconds, {'more than' if positive else 'from'} {low:g} {bound}")
        return number

    return parse


def _interval(key: str, value: Any) -> float:
    """0 (off), or at least a second: the tone itself lasts 0.2 s, and a shorter interval would be a drone."""
    allowed = "0 (off) or a number of seconds from 1 to 3600"
    try:
        seconds = _seconds(0.0, 3600.0)(key, value)
    except OptionError:
        raise OptionError(key, value, allowed) from None
    if 0 < seconds < 1:
        raise OptionError(key, value, allowed)
    return seconds


def _sample_rate(key: str, value: Any) -> int:
    if str(value) not in ("8000", "16000"):
        raise OptionError(key, value, "8000 or 16000")
    return int(value)


def _sensitivity(key: str, value: Any) -> float:
    if not _is_number(value) or not 0.0 <= float(value) <= 100.0:
        raise OptionError(key, value, "a number from 0 to 100")
    return float(value)


def _is_number(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _raise(key: str, value: Any, allowed: str):
    raise OptionError(key, value, allowed)


def _keys(key: str, value: Any) -> str:
    text = "" if value is None else str(value).upper()
    bad = [ch for ch in text if ch not in KEYS]
    if bad:
        raise OptionError(key, value, "DTMF keys from 0-9 * # A B C D")
    return "".join(dict.fromkeys(text))


def _text(limit: int):
    def parse(key: str, value: Any) -> str:
        if (
            not isinstance(value, str)
            or len(value) > limit
            or any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in value)  # a lone surrogate is no text
        ):
            raise OptionError(key, value, f"text of at most {limit} printable characters")
        return value

    return parse


# -- showing URLs: one rule for logs, events, the catalog and API answers ----------------------

#: Query parameters that carry a secret by their name (tokens, keys, signatures, S3 presigning).
_USERINFO = re.compile(r"(//)(?!\*\*\*@)[^/?#@\s]*@")
_SECRET_PARAM = re.compile(r"(token|secret|pass|pw|jwt|bearer|key|sig|auth|credential|session|code)", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` fit for a log line, an event, the catalog or an API answer: a user and password become ``***``,
    and so do the values of query parameters named like a secret (``token``, ``key``, ``sig``, ``X-Amz-*``
    credentials). The one rule for every URL the box shows.

    >>> redact("https://box:s3cret@example.com:8443/in/?X-Amz-Signature=abc&site=7")
    'https://***@example.com:8443/in/?X-Amz-Signature=***&site=7'
    >>> redact("s3://calls/box-7/")
    's3://calls/box-7/'
    """
    if not isinstance(url, str):
        return url
    url = _USERINFO.sub(r"\1***@", url)  # also where the rest is no URL at all (an error echoing a bad value)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:  # no URL after all: hide all after the path, where secrets would be
        return re.split(r"[?#;]", url, maxsplit=1)[0] + ("?***" if re.search(r"[?#;]", url) else "")
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        netloc = "***@" + netloc.rpartition("@")[2]
    query, fragment = _masked(parts.query), _masked(parts.fragment)
    path = re.sub(r";[^/]*", lambda m: ";" + _masked(m.group(0)[1:].replace(";", "&")).replace("&", ";"), parts.path)
    if netloc == parts.netloc and query == parts.query and fragment == parts.fragment and path == parts.path:
        return url
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _masked(pairs: str) -> str:
    """``a=1&token=x`` as ``a=1&token=***``: the values of parameters named like a secret hidden."""
    pieces = pairs.split("&") if pairs else []
    # A name is whatever stands before the last "=" of a piece: "=?token=x" hides its value too.
    return "&".join(
        f"{piece.partition('=')[0]}=***" if _SECRET_PARAM.search(unquote_plus(piece.rpartition("=")[0])) else piece
        for piece in pieces
    )


DESTINATION_ALLOWED = (
    'the name of a configured destination ([destinations.NAME]), "default", "mqtt" (needs [mqtt] url), '
    'a URL under a configured destination (https://..., s3://bucket/prefix/), or "" for the default'
)
_DESTINATION = re.compile(r"^(https?|s3)://\S+$")
_DESTINATION_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
USERINFO_REFUSED = (
    "a URL without a user or password in it: credentials go in the destination's token, or its username and "
    "password ([upload] or [destinations.NAME]), never in the URL, where logs and events would show them"
)


def destination(key: str, value: Any) -> str:
    """Where a finished file is uploaded, as written (``firmware.destinations`` decides whether the box has it).

    A destination's name, ``mqtt``, "" or an https://, http:// or s3:// URL with no user or password in it.
    """
    if value == "" or (isinstance(value, str) and _DESTINATION_NAME.match(value)):
        return value
    if not isinstance(value, str) or len(value) > 2048 or not _DESTINATION.match(value):
        raise OptionError(key, redact(value), DESTINATION_ALLOWED)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise OptionError(key, redact(value), DESTINATION_ALLOWED) from None
    if "@" in parts.netloc:
        shown = urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
        raise OptionError(key, shown, USERINFO_REFUSED)
    return value


def _bitrate(key: str, value: Any) -> int:
    allowed = (8, 16, 24, 32, 40, 48, 56, 64)
    if str(value) not in {str(v) for v in allowed}:
        raise OptionError(key, value, "kbit/s per channel, one of " + ", ".join(map(str, allowed)))
    return int(value)


def _callback_events(key: str, value: Any) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise OptionError(key, value, "a list of in-progress, completed, absent")
    for item in items:
        if item not in CALLBACK_EVENTS:
            raise OptionError(key, item, "one of in-progress, completed, absent")
    return tuple(dict.fromkeys(items))


def _callback_format(key: str, value: Any) -> str:
    if isinstance(value, str) and (value == "" or value.lower() in CALLBACK_FORMATS):
        return value.lower()
    raise OptionError(key, value, "one of " + ", ".join(CALLBACK_FORMATS) + ', or "" for [events] callback_format')


def _method(key: str, value: Any) -> str:
    if str(value).upper() not in ("POST", "GET"):
        raise OptionError(key, value, "POST or GET")
    return str(value).upper()


_PARSERS = {
    "name": _text(128),
    "format": _enum(Format),
    "sample_rate": _sample_rate,
    "channels": _enum(Channels),
    "track": _enum(Track),
    "beep": _bool,
    "warning_tone_interval": _interval,
    "end_on_key": _keys,
    "end_on_silence": _seconds(0.0, 3600.0),
    "input_sensitivity": _sensitivity,
    "initial_timeout": _seconds(0.0, 3600.0),
    "max_length": _seconds(0.0, 86400.0, positive=True),
    "trim": _enum(Trim),
    "pre_roll": _seconds(0.0, MAX_PRE_ROLL),
    "mp3_bitrate": _bitrate,
    "destination": destination,
    "status_callback": _text(2048),
    "status_callback_events": _callback_events,
    "status_callback_method": _method,
    "status_callback_format": _callback_format,
}
