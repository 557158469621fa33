"""The box's configuration: TOML, one schema, every key with a working default.

``load(path)`` reads the file, checks every section and key against ``SCHEMA``
and returns a frozen ``Config``. Anything wrong raises ``ConfigError`` naming
the section, the key, the value and what would be accepted; the daemon exits
with EX_CONFIG (78) on it, which systemd does not restart. Unknown sections and
keys are errors too, so a typo does not silently fall back to a default.

The defaults suit a stock Raspberry Pi with a USB audio interface: capture from
the first USB card at 16 kHz mono, a record button on GPIO17 and its LED on
GPIO27, state under ``/var/lib/edge-recorder``.

``describe()`` renders the schema as TOML with every default (``edge-recorder
config defaults``), ``reference()`` as the Markdown reference in
``docs/configuration.md`` (``edge-recorder config reference``).
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import hmac
import math
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .core import OptionError, RecordingOptions, SessionRules, Track
from .core.options import CALLBACK_EVENTS, OPTION_HELP, accepted, destination
from .destinations import DEFAULT, MQTT, NAME, Destinations, is_loopback, redact
from .findings import BOM, SECRET_NAME, ConfigError, Finding, decode_all, locate, misnamed, rename_hint

DEFAULT_PATH = Path("/etc/edge-recorder/config.toml")
ENV_VAR = "EDGE_RECORDER_CONFIG"
#: The sections SIGHUP (``systemctl reload edge-recorder``) applies to the running box; the
#: others take effect at the next restart.
RELOADABLE_SECTIONS: tuple[str, ...] = ("recording", "call", "dtmf", "log")


# -- API tokens (``[http] tokens``; the HTTP front end checks requests against them) ---------------

MIN_TOKEN_BITS = 128


class TokenError(ValueError):
    """A configured token that is too weak to use."""


def token_bits(token: str) -> float:
    """Rough entropy of a token from its length and alphabet (hex, base64 or anything); 0 for one that is
    not random: a shorter string repeated, or far fewer distinct characters than a random one would have.

    >>> round(token_bits("3f9c0a7e51d2b8641ce97a035fb2d864")), token_bits("a" * 32), token_bits("0123456789abcdef" * 2)
    (128, 0.0, 0.0)
    """
    alphabet = set(token)
    if alphabet <= set("0123456789abcdef") or alphabet <= set("0123456789ABCDEF"):
        size = 16
    elif alphabet <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/="):
        size = 64
    else:
        size = max(2, len(alphabet))
    if patterned(token.rstrip("="), size):
        return 0.0
    return len(token.rstrip("=")) * math.log2(size)


def patterned(text: str, alphabet: int = 64) -> bool:
    """A string no random draw would give: a shorter string repeated, or under half the distinct characters a
    random string of its length from ``alphabet`` characters has on average.

    >>> patterned("abcabcabcabc"), patterned("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"), patterned("kJ3n0Qz8Vt7pLw2sXy9bRf4mHc6dNa1e")
    (True, True, False)
    """
    if len(text) > 1 and text in (text + text)[1:-1]:
        return True
    expected = alphabet * (1 - (1 - 1 / alphabet) ** len(text))
    return len(set(text)) < expected / 2


def parse_tokens(text: str) -> list[str]:
    tokens = [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]
    for token in tokens:
        if token_bits(token) < MIN_TOKEN_BITS:
            raise TokenError(
                f"a token of {len(token)} characters has fewer than {MIN_TOKEN_BITS} random bits; "
                'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
    return tokens


# -- value parsers: each returns the parsed value or raises ValueError(allowed) --------


def _choice(*allowed: str) -> Callable[[Any], str]:
    """One of ``allowed`` in any case, given back as spelt there (``"put"`` is ``"PUT"``)."""
    spelling = {a.lower(): a for a in allowed}

    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in spelling:
            raise ValueError("expected one of " + ", ".join(f'"{a}"' for a in allowed))
        return spelling[value.lower()]

    return parse


def _plain(number: float) -> str:
    """``number`` as written in a config: 1048576 rather than 1.04858e+06, 0.5 as 0.5."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _number(low: float, high: float, integer: bool = False) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        # Range first, exactly (a 400-digit integer compares fine, but does not convert to a float).
        ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
        if ok and integer:
            ok = isinstance(value, int) or float(value).is_integer()
        if not ok:
            kind = "a whole number" if integer else "a number"
            raise ValueError(f"expected {kind} from {_plain(low)} to {_plain(high)}")
        return int(value) if integer else float(value)

    return parse


def _one_of_ints(*allowed: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or value not in allowed:
            raise ValueError("expected " + " or ".join(map(str, allowed)))
        return int(value)

    return parse


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or any(ord(ch) < 32 for ch in value):
        raise ValueError("expected a text string")
    return value


_PIN = re.compile(r"^(GPIO|BCM|BOARD|J8:)(\d{1,2})$", re.IGNORECASE)
_PIN_ALLOWED = 'expected a GPIO of the 40-pin header: a BCM number 0-27, a pin name like "GPIO17" or "BOARD11", or "" when not wired'


def _pin(value: Any) -> int | str | None:
    """A BCM number, a gpiozero pin name (``GPIO17``, ``BOARD11``), or "" for not wired; whether it is a GPIO
    on the 40-pin header is a rule of the panel (``_cross_checks``), for a panel that is enabled."""
    if value == "" or (isinstance(value, str) and value.lower() == "none"):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 53:
        return value
    if isinstance(value, str) and _PIN.match(value):
        return value.upper()
    raise ValueError(_PIN_ALLOWED)


def header_gpio(pin: int | str) -> int:
    """The BCM number of ``pin`` on the 40-pin header every supported board has (Pi 3, 4, 5, Zero 2 W),
    as gpiozero's board data has it; ValueError saying what the pin is when it is not a GPIO there.

    >>> header_gpio("BOARD11"), header_gpio("J8:11"), header_gpio("GPIO17"), header_gpio(17)
    (17, 17, 17, 17)
    >>> header_gpio("BOARD2")
    Traceback (most recent call last):
    ...
    ValueError: BOARD2 is pin 2 of the 40-pin header, 5V power, not a GPIO
    >>> header_gpio(40)
    Traceback (most recent call last):
    ...
    ValueError: there is no GPIO40 on the 40-pin header (GPIO0 to GPIO27); physical pin 40 is BOARD40 (GPIO21)
    """
    names = _header()
    if isinstance(pin, int):
        kind, number = "GPIO", pin
    else:
        match = _PIN.match(pin)
        if match is None:
            raise ValueError(_PIN_ALLOWED)
        kind, number = match.group(1).upper(), int(match.group(2))
    if kind in ("BOARD", "J8:"):
        if number not in names:
            raise ValueError(f"{pin} is not on the 40-pin header (pins 1 to 40)")
        name = names[number]
        if not name.startswith("GPIO"):
            kind_of = {"3V3": "3.3 V power", "5V": "5V power", "GND": "ground"}.get(name, name)
            raise ValueError(f"{pin} is pin {number} of the 40-pin header, {kind_of}, not a GPIO")
        return int(name[4:])
    if f"GPIO{number}" not in names.values():
        text = f"there is no GPIO{number} on the 40-pin header (GPIO0 to GPIO27)"
        if names.get(number, "").startswith("GPIO"):
            text += f"; physical pin {number} is BOARD{number} ({names[number]})"
        raise ValueError(text)
    return number


_HEADER_NAMES: dict[int, str] = {}


def _header() -> dict[int, str]:
    """Physical pin number to its name (``GPIO17``, ``GND``) on the 40-pin header, from gpiozero."""
    if not _HEADER_NAMES:
        from gpiozero.pins.pi import PiBoardInfo

        board = PiBoardInfo.from_revision(0xC03111)  # a Pi 4 B: the header is the same on every 40-pin board
        _HEADER_NAMES.update({number: info.name for number, info in board.headers["J8"].pins.items()})
    return _HEADER_NAMES


def _keys(value: Any) -> str:
    text = value.upper() if isinstance(value, str) else None
    if text is None or len(text) > 8 or any(ch not in "0123456789*#ABCD" for ch in text):
        raise ValueError('expected up to 8 DTMF keys from 0-9 * # A-D, e.g. "*1", or "" for none')
    return text


_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _device_id(value: Any) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or not _DEVICE_ID.match(value):
        raise ValueError(
            'expected letters, digits, - and _ (at most 64, starting with a letter or digit), or "" for one derived from the board\'s serial number'
        )
    return value


def _broker_url(value: Any) -> str:
    if value == "":
        return ""
    match = re.match(r"^mqtts?://[^/:\s]+(:(\d{1,5}))?/?$", value) if isinstance(value, str) else None
    if match is None or not 0 < int(match.group(2) or 1883) < 65536:
        raise ValueError('expected "mqtt://host[:port]" or "mqtts://host[:port]" (port 1-65535), or "" for none')
    return value.rstrip("/")


def _url(value: Any) -> str:
    if value == "":
        return ""
    allowed = 'expected an http:// or https:// URL, or "" for none'
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", value) or not value.isprintable():
        raise ValueError(allowed)
    try:  # what requests will have to read: a host, and a port that is a port
        parts = urlsplit(value)
        if not parts.hostname or not 0 < (parts.port or 443) < 65536:
            raise ValueError(allowed)
    except ValueError:
        raise ValueError(allowed) from None
    return value


def _topic_level(value: Any) -> str:
    if not isinstance(value, str) or not value or any(ch in value for ch in "#+\x00") or value.startswith("$"):
        raise ValueError("expected a topic prefix without #, + or a leading $")
    return value.strip("/")


#: The most a secret or key file may hold: a token list or a key is far smaller.
SMALL_FILE_BYTES = 64 * 1024


def read_small_file(path: str | Path, what: str = "the file") -> str:
    """The UTF-8 text of a small regular file (a secret, a key); ValueError naming what is wrong.

    Bounded: a device such as ``/dev/zero``, a FIFO or a huge file is refused, not read until memory ends.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: a FIFO would block the open
            raise ValueError(f"{what} {path} is not a regular file")
        with open(path, "rb") as fh:
            data = fh.read(SMALL_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {what}: {exc.strerror}") from None
    if len(data) > SMALL_FILE_BYTES:
        raise ValueError(f"{what} {path} is over {SMALL_FILE_BYTES} bytes; it should hold a secret or a key")
    try:
        # A byte order mark (Notepad writes one) is not part of the secret.
        return data.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text") from None


def _secret_text(value: Any) -> str:
    """A secret given inline, as ``file:/path`` or as ``env:NAME``.

    A file or a variable gives all of its text without the whitespace around it (such as the final
    newline an editor or ``echo`` adds): a file of bearer tokens may hold one a line, and a password
    may hold a ``#``.
    """
    if not isinstance(value, str):
        raise ValueError('expected a string, "file:/path" or "env:NAME"')
    if value.startswith("file:"):
        return read_small_file(value[5:], "the secret file").strip()
    if value.startswith("env:"):
        if value[4:] not in os.environ:
            raise ValueError(f"the environment variable {value[4:]} is not set")
        return os.environ[value[4:]].strip()
    return value


def _secret(value: Any) -> str:
    """One secret (a password, a token, a key): it goes into a header or a signature, so no line break or
    other control character, which would fail there and show the secret in the error."""
    text = _secret_text(value)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError("expected a secret on one line, without control characters")
    return text


def _tokens(value: Any) -> str:
    """Bearer tokens (a secret), each strong enough; that the API needs one is a cross-check."""
    if not isinstance(value, str):
        raise ValueError(
            f"expected tokens of at least {MIN_TOKEN_BITS} random bits each, comma-separated or one a line, "
            'given inline, as "file:/path" or as "env:NAME"'
        )
    text = _secret_text(value)
    try:
        parse_tokens(text)
    except TokenError as exc:
        raise ValueError(str(exc)) from None
    return text


_UPLOAD_URL = 'an https:// URL (http:// on loopback), "s3://bucket/prefix/", "mqtt" (needs [mqtt] url), or "" for none'


def _upload_destination(value: Any) -> str:
    """``[upload] destination``: the default destination's URL (its credentials are ``[upload]``'s)."""
    if isinstance(value, str) and value not in ("", "mqtt") and "://" not in value:
        raise ValueError(f"expected {_UPLOAD_URL}")
    try:
        value = destination("destination", value)
    except OptionError as exc:
        raise ValueError(f"expected {exc.allowed if '@' in str(exc.value) else _UPLOAD_URL}") from None
    parts = urlsplit(value)
    if parts.scheme.lower() == "http" and not is_loopback(parts.hostname):
        # The upload would refuse it at the first recording (firmware.delivery.uploads): say so now.
        raise ValueError(
            "plain http:// would send recordings and credentials across the network in clear: use https:// "
            "(http:// is for a receiver on this box, 127.0.0.1 or localhost)"
        )
    return value


def _destination_url(value: Any) -> str:
    """A named destination's ``url``: like ``[upload] destination``, but one there must be."""
    if value in ("", "mqtt"):
        raise ValueError('expected an https:// URL (http:// on loopback) or "s3://bucket/prefix/"')
    return _upload_destination(value)


def _callback_events(value: Any) -> str:
    """Statuses separated by spaces or commas, given back separated by spaces."""
    words = value.replace(",", " ").split() if isinstance(value, str) else None
    if not words or any(word not in CALLBACK_EVENTS for word in words):
        raise ValueError("expected one or more of " + ", ".join(CALLBACK_EVENTS) + ", separated by spaces or commas")
    return " ".join(dict.fromkeys(words))


def _listen(value: Any) -> str:
    if value == "":
        return ""
    match = re.match(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$", value) if isinstance(value, str) else None
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ValueError('expected "host:port", e.g. "0.0.0.0:8080" or "127.0.0.1:8080", or "" for off')
    return value


def _level(value: Any) -> str:
    return _choice("debug", "info", "warning", "error")(value)


_RSA_KEY = (
    'expected an RSA public key of at least 2048 bits in PEM ("-----BEGIN PUBLIC KEY-----..."), '
    'the path of a file holding one, or "" for none'
)


def _rsa_public_key(value: Any) -> str:
    """``[http] vonage_public_key``: the PEM text itself (it has ``-----BEGIN``), or the path of a file holding it."""
    if value == "":
        return ""
    if not isinstance(value, str):
        raise ValueError(_RSA_KEY)
    text = value if "-----BEGIN" in value else read_small_file(value, "the key file")
    if "PRIVATE KEY-----" in text:
        raise ValueError("expected the application's public key; this is its private key, which never leaves it")
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ValueError(f"{_RSA_KEY}: this is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{_RSA_KEY}: this is not an RSA key (Vonage signs its JWTs with RS256)")
    if key.key_size < 2048:
        raise ValueError(f"{_RSA_KEY}: this one has {key.key_size} bits")
    return text.strip() + "\n"


def _application_id(value: Any) -> str:
    """A Vonage application id: a UUID, given back in lower case; "" for none."""
    if value == "":
        return ""
    allowed = 'expected a Vonage application id, a UUID such as "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", or "" for none'
    if not isinstance(value, str) or len(value) != 36:
        raise ValueError(allowed)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(allowed) from None


# -- the schema -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    default: Any
    parse: Callable[[Any], Any]
    help: str

    @property
    def secret(self) -> bool:
        """May be given as ``file:/path`` or ``env:NAME``; an inline value is never shown in an error."""
        return self.parse in (_secret, _tokens)


SCHEMA: dict[str, dict[str, Key]] = {
    "device": {
        "id": Key("", _device_id, "device id in topics and file names; empty: derived from the board's serial number"),
    },
    "audio": {
        "capture": Key("plughw:CARD=Device,DEV=0", _text, "ALSA capture PCM"),
        "playback": Key("", _text, "ALSA playback PCM for beeps and warning tones; empty: none"),
        "sample_rate": Key(16000, _one_of_ints(8000, 16000), "capture rate in Hz"),
        "channels": Key(1, _one_of_ints(1, 2), "capture channels: 1 (both tracks mixed) or 2"),
        "inbound_channel": Key(0, _one_of_ints(0, 1), "capture channel carrying the line (far party)"),
        "outbound_channel": Key(1, _one_of_ints(0, 1), "capture channel carrying the local party"),
        "period_ms": Key(20, _number(10, 40, integer=True), "ALSA period in milliseconds"),
        "reconnect_grace": Key(
            5.0, _number(0, 300), "seconds a vanished device may take to return before recordings end with an error"
        ),
        "buffer_seconds": Key(10.0, _number(5, 120), "audio held between capture and storage while the disk is slow"),
    },
    "gpio": {
        "enabled": Key(True, _bool, "use the GPIO panel"),
        "pin_factory": Key(
            "", _text, 'gpiozero pin factory: "" for its default, "lgpio", "rpigpio", "native" or "mock"'
        ),
        "record_button": Key(17, _pin, "record button (to ground)"),
        "pause_button": Key("", _pin, "pause button (to ground)"),
        "hook_switch": Key("", _pin, "hook-switch input"),
        "hook_off_hook": Key("closed", _choice("closed", "open"), "contact state of the hook switch when off hook"),
        "led": Key(27, _pin, "record LED"),
        "buzzer": Key("", _pin, "buzzer for local beeps"),
        "active_high": Key(False, _bool, "buttons pull the pin high when pressed"),
        "bounce_ms": Key(30, _number(0, 500, integer=True), "button debounce time"),
        "hook_bounce_ms": Key(100, _number(0, 2000, integer=True), "hook-switch debounce time"),
        "hold_seconds": Key(0.0, _number(0, 10), "holding the record button this long pauses or resumes; 0: off"),
    },
    "recording": {
        # Checked as a whole by RecordingOptions.from_mapping: the start options of firmware/core/options.py.
    },
    "call": {
        "detect": Key(
            "auto",
            _choice("auto", "hook", "audio", "none"),
            "how a call is noticed: hook switch, audio activity, auto (hook when wired)",
        ),
        "auto_record": Key("none", _choice("none", "off-hook", "voice"), "start a recording for every call"),
        "pre_roll": Key(1.0, _number(0, 30), "seconds of audio from before the call start kept in auto recordings"),
        "idle_timeout": Key(
            10.0, _number(1, 3600), "seconds without speech after which an audio-detected call is over"
        ),
        "stop_hold": Key(
            2.0, _number(0, 60), "seconds a call may pause (hook bounce, a quiet moment) before its recording stops"
        ),
        "min_length": Key(1.0, _number(0, 3600), "auto recordings shorter than this are discarded"),
    },
    "dtmf": {
        "start": Key("", _keys, "key sequence that starts a recording, e.g. *1"),
        "stop": Key("", _keys, "key sequence that stops the recordings"),
        "pause": Key("", _keys, "key sequence that pauses"),
        "resume": Key("", _keys, "key sequence that resumes"),
        "track": Key("both", _choice(*(t.value for t in Track)), "track whose keys count"),
        "key_timeout": Key(3.0, _number(0.5, 30), "seconds allowed between the keys of a sequence"),
    },
    "spool": {
        "directory": Key("/var/lib/edge-recorder/spool", _text, "where recordings are written"),
        "fsync_interval": Key(1.0, _number(0.1, 10), "seconds between flushes to storage"),
        "min_free_mb": Key(64, _number(0, 1 << 20, integer=True), "recording stops below this much free space"),
    },
    "catalog": {
        "path": Key("/var/lib/edge-recorder/catalog.sqlite3", _text, "SQLite catalog of recordings"),
    },
    "sim": {
        "enabled": Key(False, _bool, "run with simulated hardware (WAV capture, mock GPIO)"),
        "capture": Key(
            "wav",
            _choice("wav", "alsa"),
            'what the simulated box hears: "wav" (the file below) or "alsa" ([audio] capture, e.g. ALSA\'s file plugin)',
        ),
        "audio": Key("", _text, "WAV file the simulated box hears; empty: a built-in demo call"),
        "frames": Key(
            0,
            _number(0, 1 << 40, integer=True),
            "with capture = alsa: stop after this many frames (ALSA's file plugin never ends); 0: never",
        ),
        "faults": Key("", _text, 'capture faults to inject, e.g. "3=overrun:0.1, 5=disconnect:2" (seconds of audio)'),
        "pace": Key("realtime", _choice("realtime", "fast"), "feed the file at real time or as fast as possible"),
        "scenario": Key("", _text, 'panel actions keyed to audio time, e.g. "2=button, 5=hook:off"'),
        "playback": Key("", _text, "WAV file that receives the tones the box plays; empty: none"),
    },
    "mqtt": {
        "url": Key(
            "",
            _broker_url,
            'broker, "mqtt://host:1883" or "mqtts://host:8883"; empty: no MQTT (the box records and spools, delivery is off)',
        ),
        "prefix": Key("edge-recorder", _topic_level, "topic prefix: <prefix>/<device_id>/status|state|events|cmd"),
        "username": Key("", _text, "user name"),
        "password": Key("", _secret, 'password, or "file:/path" or "env:NAME"'),
        "ca_file": Key("", _text, "CA certificate for mqtts:// (empty: the system's)"),
        "client_cert": Key("", _text, "client certificate for mqtts://"),
        "client_key": Key("", _text, "client key for mqtts://"),
        "keepalive": Key(30, _number(5, 600, integer=True), "seconds between keepalive pings"),
        "session_expiry": Key(
            604800,
            _number(0, 1 << 31, integer=True),
            "seconds the broker keeps the session (and commands) while the box is offline",
        ),
        "heartbeat": Key(60.0, _number(1, 3600), "seconds between state publications when nothing changes"),
        "command_auth": Key(
            "token",
            _choice("token", "broker"),
            'who may send commands: "token": each command carries command_token (with none set, only list and '
            'get are answered); "broker": the broker\'s ACL decides who may publish on <prefix>/<device_id>/cmd',
        ),
        "command_token": Key(
            "", _secret, 'commands must carry this "token" when set ("file:/path" or "env:NAME" allowed)'
        ),
        "max_command_bytes": Key(
            65536, _number(256, 1 << 24, integer=True), "larger commands are refused before parsing"
        ),
        "ha_discovery": Key(
            False,
            _bool,
            "publish Home Assistant MQTT discovery; with command_token, its record button carries a token good "
            "for the button only",
        ),
        "ha_prefix": Key("homeassistant", _topic_level, "Home Assistant discovery prefix"),
    },
    "events": {
        "webhook": Key("", _url, "device-wide status callback for every recording"),
        "webhook_method": Key("POST", _choice("POST", "GET"), "its HTTP method"),
        "webhook_events": Key("completed", _callback_events, "which statuses fire it"),
        "callback_format": Key(
            "native", _choice("native", "twilio", "signalwire", "sinch", "vonage"), "body of status callbacks"
        ),
        "signing_secret": Key(
            "", _secret, 'HMAC-SHA256 key for the callbacks\' signature header ("file:/path" or "env:NAME" allowed)'
        ),
        "outbox_max": Key(
            100000,
            _number(100, 10_000_000, integer=True),
            "undelivered events kept; the oldest are dropped beyond this",
        ),
    },
    "upload": {
        "destination": Key("", _upload_destination, "where finished recordings go; empty: nowhere"),
        "name_template": Key("{yyyyMMddHHmmss}_{device_id}_{call_id}.{format}", _text, "remote file name"),
        "method": Key("PUT", _choice("PUT", "POST"), "HTTP method for https:// destinations"),
        "token": Key("", _secret, "bearer token for https:// destinations"),
        "username": Key("", _text, "HTTP Basic user for https:// destinations"),
        "password": Key("", _secret, "HTTP Basic password"),
        "s3_endpoint": Key("", _text, 'S3 endpoint, e.g. "https://s3.eu-west-1.amazonaws.com"; empty: AWS'),
        "s3_region": Key("", _text, "S3 region"),
        "s3_access_key": Key("", _secret, "S3 access key (empty: AWS_ACCESS_KEY_ID)"),
        "s3_secret_key": Key("", _secret, "S3 secret key (empty: AWS_SECRET_ACCESS_KEY)"),
        "timeout": Key(30.0, _number(1, 3600), "seconds a stalled transfer may take before it is retried"),
    },
    "retention": {
        "days": Key(30.0, _number(0, 3650), "media are deleted this many days after a confirmed upload; 0: never"),
        "deleted_metadata_days": Key(40.0, _number(0, 3650), "metadata of deleted recordings are kept this long"),
        "low_space_mb": Key(
            500, _number(0, 1 << 24, integer=True), "below this much free space uploaded media go first, oldest first"
        ),
    },
    "http": {
        "listen": Key("", _listen, 'local HTTP API address, e.g. "0.0.0.0:8080"; empty: off'),
        "tokens": Key(
            "", _tokens, "bearer tokens for the API; while it listens it needs one, or a Basic username and password"
        ),
        "username": Key(
            "",
            _text,
            "HTTP Basic user (optional, beside the tokens); on a listen address other than 127.0.0.1 "
            "only with tls_cert: Basic sends the password in clear",
        ),
        "password": Key("", _secret, "HTTP Basic password: at least 12 characters, not a repeated pattern"),
        "tls_cert": Key("", _text, "certificate (PEM) for HTTPS; empty: plain HTTP"),
        "tls_key": Key("", _text, "its private key (PEM)"),
        "media_link_seconds": Key(900, _number(10, 7 * 86400, integer=True), "how long signed media links stay valid"),
        "link_secret": Key("", _secret, "key that signs media links; empty: a random one per start"),
        "public_url": Key(
            "", _text, 'base URL put into media_url, e.g. "https://box-7.local:8443"; empty: from the listen address'
        ),
        "max_body_bytes": Key(65536, _number(1024, 1 << 24, integer=True), "larger request bodies get 413"),
        "failed_logins": Key(
            10, _number(1, 1000, integer=True), "failed logins per minute from one address before 429"
        ),
        "vonage_public_key": Key(
            "",
            _rsa_public_key,
            "a Vonage application's public key (PEM, or a file holding it): its RS256 JWTs may download media; "
            "empty: none",
        ),
        "vonage_application_id": Key(
            "", _application_id, "the Vonage application whose JWTs are taken (their application_id claim)"
        ),
    },
    "encryption": {
        "public_key": Key(
            "",
            _text,
            'age recipient ("age1...") or a file holding it: recordings are encrypted to it at rest; empty: off',
        ),
    },
    "log": {
        "level": Key("info", _level, "log level"),
    },
    "update": {
        "confirm_seconds": Key(
            300,
            _number(1, 86400, integer=True),
            "after an update, seconds the new version must record healthily (capture open, no error, no restart) "
            "before it is confirmed; until then a crash loop, a failed start or a reboot switches back to the "
            "previous version",
        ),
        "ca_file": Key(
            "",
            _text,
            "CA certificate for the HTTPS servers that MQTT update commands download bundles from (empty: the "
            "system's)",
        ),
        "allow_downgrade": Key(
            False,
            _bool,
            "let an MQTT update command's force install a release that is not newer than the running one (going "
            "back brings back what later releases fixed); edge-recorder update --force on the box always may",
        ),
    },
}

#: The keys of each ``[destinations.NAME]`` table: a destination of its own, with its own credentials, that
#: start options may name (``firmware.destinations``).
DESTINATION_SCHEMA: dict[str, Key] = {
    "url": Key("", _destination_url, "where files sent to this destination go"),
    "method": Key("PUT", _choice("PUT", "POST"), "HTTP method for an https:// url"),
    "token": Key("", _secret, "bearer token for an https:// url"),
    "username": Key("", _text, "HTTP Basic user for an https:// url"),
    "password": Key("", _secret, "HTTP Basic password"),
    "s3_endpoint": Key("", _text, "S3 endpoint of an s3:// url; empty: AWS"),
    "s3_region": Key("", _text, "S3 region"),
    "s3_access_key": Key("", _secret, "S3 access key (empty: AWS_ACCESS_KEY_ID)"),
    "s3_secret_key": Key("", _secret, "S3 secret key (empty: AWS_SECRET_ACCESS_KEY)"),
}


@dataclass(frozen=True)
class Config:
    """A validated configuration: ``config.audio["capture"]`` and so on."""

    device: dict[str, Any]
    audio: dict[str, Any]
    gpio: dict[str, Any]
    recording: RecordingOptions
    call: dict[str, Any]
    dtmf: dict[str, Any]
    spool: dict[str, Any]
    catalog: dict[str, Any]
    sim: dict[str, Any]
    mqtt: dict[str, Any]
    events: dict[str, Any]
    upload: dict[str, Any]
    retention: dict[str, Any]
    http: dict[str, Any]
    encryption: dict[str, Any]
    log: dict[str, Any]
    update: dict[str, Any]
    #: ``[destinations.NAME]`` tables by name (``DESTINATION_SCHEMA``).
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = field(default="defaults", compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def device_id(self) -> str:
        return self.device["id"] or derived_device_id()

    def upload_destinations(self) -> Destinations:
        """Every destination this config names, with its credentials: ``[upload]``, ``[destinations.NAME]``
        and ``mqtt`` when a broker is set (``firmware.destinations``)."""
        return Destinations.from_config(self.upload, self.destinations, mqtt=bool(self.mqtt["url"]))

    def session_rules(self, hook_switch: bool | None = None) -> SessionRules:
        """The ``[dtmf]`` and ``[call]`` rules for the recording session (``firmware.core.session``).

        ``detect = "auto"`` is the hook switch when one is wired (``hook_switch``;
        by default, when ``[gpio] hook_switch`` is set), otherwise audio activity.
        """
        c, d = self.call, self.dtmf
        wired = self.gpio["hook_switch"] is not None if hook_switch is None else hook_switch
        detect = c["detect"]
        if detect == "auto":
            detect = "hook" if wired else "audio"
        return SessionRules(
            sequences={k: d[k] for k in ("start", "stop", "pause", "resume") if d[k]},
            sequence_track=d["track"],
            key_timeout=d["key_timeout"],
            detect=detect,
            auto_record=c["auto_record"],
            call_pre_roll=c["pre_roll"],
            idle_timeout=c["idle_timeout"],
            stop_hold=c["stop_hold"],
            min_length=c["min_length"],
        )

    def replace(self, **sections: dict[str, Any]) -> Config:
        """This config with some keys changed (and checked): ``replace(sim={"enabled": True})``."""
        raw = {name: dict(values) for name, values in self.raw.items()}
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        return parse(raw, self.source)


def parse(raw: Mapping[str, Any], source: str = "config") -> Config:
    """Check ``raw`` (a parsed TOML document) against the schema; ConfigError with every problem found."""
    config, findings = validate(raw, source)
    if config is None:
        raise ConfigError.of(findings)
    return config


def validate(
    raw: Mapping[str, Any], source: str = "config", unreadable: Iterable[tuple[str, str]] = ()
) -> tuple[Config | None, list[Finding]]:
    """Every problem in ``raw`` at once, and the config when none is an error (warnings may remain).

    Each key is checked on its own; a key that fails counts as its default for the rules between keys,
    and a rule is not reported again on a key that failed already, nor on one that is ``unreadable``
    (on a line of the file that is not TOML: ``firmware.findings.decode_all``).
    """
    check = _Check(source)
    check.failed.update(unreadable)
    for name in sorted(set(raw) - set(SCHEMA) - {"destinations"}):
        check.add(
            name,
            None,
            None,
            "unknown section; the sections are " + ", ".join(f"[{s}]" for s in SCHEMA) + " and [destinations.NAME]",
        )
    sections: dict[str, Any] = {}
    for name, keys in SCHEMA.items():
        given = raw.get(name, {})
        if not isinstance(given, Mapping):
            check.add(name, None, None, f"must be a table of keys ([{name}] with key = value lines below it)")
            given = {}
        if name == "recording":
            sections[name] = _recording(given, check)
            continue
        sections[name] = _keys_of(name, given, keys, check)
    sections["destinations"] = _destinations(raw.get("destinations", {}), check)
    _cross_checks(sections, check)
    if any(not f.warning for f in check.findings):
        return None, check.findings
    return Config(**sections, source=source, raw=raw), check.findings


class _Check:
    """The findings of one check, and the keys that failed on their own."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.findings: list[Finding] = []
        self.failed: set[tuple[str, str | None]] = set()

    def add(
        self,
        section: str,
        key: str | None,
        value: Any,
        reason: str,
        *,
        warning: bool = False,
        given: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Report ``reason`` on ``section``/``key``; a rule that reads other keys names them in ``given``, so it
        is not reported when one of them was wrong on its own (its default would stand in for the real value)."""
        if (section, key) in self.failed or any(other in self.failed for other in given):
            return
        self.failed.add((section, key))
        self.findings.append(Finding(self.source, reason, section, key, value, warning=warning))


def _keys_of(section: str, given: Mapping[str, Any], keys: Mapping[str, Key], check: _Check) -> dict[str, Any]:
    """The values of one table checked against its keys, with the defaults of those not given or wrong."""
    for extra in sorted(set(given) - set(keys)):
        # A misspelt secret key (pasword, command_tokn) holds a secret all the same.
        secrets = [name for name, spec in keys.items() if spec.secret or SECRET_NAME.search(name)]
        secret = bool(SECRET_NAME.search(extra) or difflib.get_close_matches(extra, secrets, cutoff=0.75))
        close = difflib.get_close_matches(extra, list(keys), n=1)
        reason = f"unknown key; did you mean {close[0]}? " if close else "unknown key; "
        check.add(section, extra, _shown(given[extra], secret=secret), reason + "the keys are " + ", ".join(keys))
    values = {}
    for key, spec in keys.items():
        value = given.get(key, spec.default)
        try:
            values[key] = spec.parse(value)
        except ValueError as exc:
            check.add(section, key, _shown(value, spec.secret), str(exc))
            values[key] = _default(spec)
    return values


#: Every key that holds a secret, by the schema (for ``is_secret_name``).
_SECRET_KEYS = sorted(
    {name for keys in (*SCHEMA.values(), DESTINATION_SCHEMA) for name, spec in keys.items() if spec.secret}
)


def _default(spec: Key) -> Any:
    """A key's default as parsed, or as written where it has none that parses (a destination's url)."""
    try:
        return spec.parse(spec.default)
    except ValueError:
        return spec.default


def _shown(value: Any, secret: bool) -> Any:
    """A refused value as an error line may show it: never a secret, nor a private key pasted in the wrong place.

    >>> _shown("-----BEGIN PRIVATE KEY-----\\nMIIE...", secret=False), _shown("hunter2", secret=True)
    ('(a private key, hidden)', '(hidden)')
    """
    if isinstance(value, Mapping):
        return "(a table)"  # it may hold anything: a password, a pasted key
    if isinstance(value, list | tuple):
        return f"(a list of {len(value)})"
    if "PRIVATE KEY" in str(value):
        return "(a private key, hidden)"
    if secret and not str(value).startswith(("file:", "env:")):
        return "(hidden)"
    return redact(value)


def _destinations(given: Any, check: _Check) -> dict[str, dict[str, Any]]:
    """The ``[destinations.NAME]`` tables: each a name of its own and a url with its credentials."""
    if not isinstance(given, Mapping):
        check.add("destinations", None, None, "must hold tables: [destinations.NAME] with a url")
        return {}
    out = {}
    for name, table in given.items():
        section = f"destinations.{name}"
        if not NAME.match(name) or name in (DEFAULT, MQTT):
            check.add(
                section,
                None,
                None,
                f"a destination's name is lower-case letters, digits, - and _ (at most 32, starting with a letter), "
                f"and not {DEFAULT!r} or {MQTT!r}",
            )
            continue
        if not isinstance(table, Mapping):
            check.add(section, None, None, "must be a table of keys, with a url")
            continue
        before = len(check.findings)
        values = _keys_of(section, table, DESTINATION_SCHEMA, check)
        if len(check.findings) == before:
            out[name] = values
    return out


def _recording(given: Mapping[str, Any], check: _Check) -> RecordingOptions:
    """The ``[recording]`` start options; each wrong one is reported and left out, the others checked again."""
    given = dict(given)
    while True:
        try:
            return RecordingOptions.from_mapping(given)
        except OptionError as exc:
            check.add("recording", exc.option, exc.value, f"expected {exc.allowed}")
            if exc.option not in given:
                return RecordingOptions()
            del given[exc.option]


def _cross_checks(s: dict[str, Any], check: _Check) -> None:
    """The rules between keys, each reported on the key to change."""
    audio = s["audio"]
    if audio["channels"] == 2 and audio["inbound_channel"] == audio["outbound_channel"]:
        check.add(
            "audio",
            "outbound_channel",
            audio["outbound_channel"],
            "must differ from inbound_channel on a 2-channel input",
            given=(("audio", "channels"), ("audio", "inbound_channel")),
        )
    rec: RecordingOptions = s["recording"]
    if rec.channels.value == "dual" and audio["channels"] == 1:
        check.add(
            "recording",
            "channels",
            "dual",
            'needs [audio] channels = 2; a mono input cannot separate the tracks: use "mono"',
            given=(("audio", "channels"),),
        )
    gpio = s["gpio"]
    seen: dict[int, tuple[str, Any]] = {}
    for role in ("record_button", "pause_button", "hook_switch", "led", "buzzer"):
        pin = gpio[role]
        if pin is None or ("gpio", role) in check.failed or not gpio["enabled"]:
            continue
        try:
            bcm = header_gpio(pin)
        except ValueError as exc:
            check.add("gpio", role, pin, str(exc))
            continue
        if bcm in seen:
            other, named = seen[bcm]
            same = "" if named == pin else f": {pin} and {named} are the same pin (GPIO{bcm})"
            check.add("gpio", role, pin, f"pin already used by {other}{same}")
        seen.setdefault(bcm, (role, pin))
    call = s["call"]
    if call["detect"] == "hook" and gpio["hook_switch"] is None:
        check.add("call", "detect", "hook", "needs [gpio] hook_switch to be wired", given=(("gpio", "hook_switch"),))
    if call["auto_record"] != "none" and call["detect"] == "none":
        check.add(
            "call",
            "auto_record",
            call["auto_record"],
            'needs call detection; set [call] detect to "auto", "hook" or "audio"',
            given=(("call", "detect"),),
        )
    elif call["auto_record"] == "off-hook" and gpio["hook_switch"] is None:
        # It works (a call noticed from the audio is recorded from its start), but says what it does not do.
        check.add(
            "call",
            "auto_record",
            "off-hook",
            "no [gpio] hook_switch is wired, so the box cannot tell when the handset is lifted: each call is "
            'noticed from the audio and recorded from its first speech, as with "voice"; wire hook_switch, or '
            'say "voice"',
            given=(("gpio", "hook_switch"),),
            warning=True,
        )
    if s["upload"]["destination"] == "mqtt" and not s["mqtt"]["url"]:
        check.add(
            "upload", "destination", "mqtt", "needs [mqtt] url: files go over the broker", given=(("mqtt", "url"),)
        )
    destinations = Destinations.from_config(s["upload"], s["destinations"], mqtt=bool(s["mqtt"]["url"]))
    try:
        destinations.resolve(s["recording"].destination)
    except OptionError as exc:
        check.add("recording", "destination", exc.value, f"expected {exc.allowed}")
    m = s["mqtt"]
    if m["command_auth"] == "broker" and m["command_token"]:
        check.add(
            "mqtt",
            "command_auth",
            "broker",
            'command_token is set too: with "broker" no token is asked for; remove command_token, or use "token"',
        )
    if m["ha_discovery"] and m["command_auth"] == "token" and not m["command_token"]:
        check.add(
            "mqtt",
            "ha_discovery",
            True,
            "Home Assistant's record button needs a command token to press with: set command_token (the button "
            'then carries a token good for the button only), or command_auth = "broker"',
        )
    http = s["http"]
    if http["listen"]:
        if not parse_tokens(http["tokens"]) and not (http["username"] and http["password"]):
            check.add("http", "tokens", "", "the API needs at least one token (or a Basic user and password)")
        if bool(http["tls_cert"]) != bool(http["tls_key"]) and not http["tls_cert"]:
            check.add("http", "tls_key", http["tls_key"], "needs tls_cert too")
        if http["username"]:
            _check_basic(http, check)
    if bool(http["vonage_public_key"]) != bool(http["vonage_application_id"]):
        key = "vonage_application_id" if http["vonage_public_key"] else "vonage_public_key"
        check.add("http", key, "", "vonage_public_key and vonage_application_id go together: a JWT is checked by both")
    sequences = {k: s["dtmf"][k] for k in ("start", "stop", "pause", "resume") if s["dtmf"][k]}
    for a, seq_a in sequences.items():
        for b, seq_b in sequences.items():
            if a < b and (seq_a.startswith(seq_b) or seq_b.startswith(seq_a)):
                check.add("dtmf", b, seq_b, f"clashes with {a} = {seq_a!r}: no sequence may begin with another")


#: What a button token is derived for: it presses the record button and does nothing else.
BUTTON_SCOPE = b"edge-recorder/mqtt/button"


def button_token(command_token: str) -> str:
    """The token Home Assistant's record button carries (``[mqtt] ha_discovery``): derived from
    ``command_token`` (HMAC-SHA256), so it is stable and changes with it, and good for the ``button``
    command only. It sits in the retained discovery document, so whoever may read the discovery topic may
    press the button, and nothing more: record, stop with options, pause, delete and the destination still
    need ``command_token`` itself, which cannot be worked back from this.

    >>> button_token("k" * 43)
    'btn_TbEdiNe55jVQJzZagVyRqZfp70RInbeTHFmIPNBnYo0'
    """
    mac = hmac.new(command_token.encode(), BUTTON_SCOPE, hashlib.sha256).digest()
    return "btn_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def command_mode(mqtt: Mapping[str, Any]) -> str:
    """Who may send a box MQTT commands, in words for provisioning and doctor, from its ``[mqtt]`` keys.

    >>> command_mode({"url": "mqtt://broker", "command_auth": "token", "command_token": ""})[:31]
    'list and get only: start, stop,'
    """
    if not mqtt.get("url"):
        return "no [mqtt] url: the box takes no MQTT commands"
    if mqtt.get("command_auth", "token") == "broker":
        return (
            'command_auth = "broker": whoever the broker lets publish on the box\'s cmd topic may record and '
            "delete; the broker's ACL is the boundary"
        )
    if mqtt.get("command_token"):
        return "every command must carry [mqtt] command_token"
    return (
        "list and get only: start, stop, pause, resume, button and delete need [mqtt] command_token "
        '(or command_auth = "broker" where the broker\'s ACL is the boundary)'
    )


def defaults() -> Config:
    return parse({}, "defaults")


def load(path: Path | str | None = None) -> Config:
    """Read the config from ``path``, ``$EDGE_RECORDER_CONFIG`` or the default path.

    The default path may be absent (every key has a default); a path that was
    asked for must exist. ConfigError names every problem in the file, each at its line.
    """
    explicit = path is not None or bool(os.environ.get(ENV_VAR))
    path = Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH)
    if not explicit and not path.exists() and not misnamed(path.parent, path.name):
        return defaults()
    config, findings = check_file(path)
    if config is None:
        raise ConfigError.of(findings)
    return config


def check_file(path: Path | str) -> tuple[Config | None, list[Finding]]:
    """Everything wrong with the file at ``path``, each at its line, and the config when nothing is an error.

    Warnings: a file that sets nothing (every key keeps its default).
    """
    path = Path(path)
    source = str(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: a FIFO would block the open
            return None, [Finding(source, "is a folder, not a file" if path.is_dir() else "is not a regular file")]
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            return None, [Finding(source, f"is over {MAX_CONFIG_BYTES // 1024} KiB: is it the right file?")]
    except FileNotFoundError:
        near = misnamed(path.parent, path.name)
        reason = "no such file" + (f"; {near[0].name} is there: {rename_hint(near[0], path.name)}" if near else "")
        return None, [Finding(source, reason)]
    except PermissionError:
        raise  # the command says which user may read it (firmware.cli.access)
    except OSError as exc:
        return None, [Finding(source, f"cannot be read: {exc.strerror}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [Finding(source, "not UTF-8 text", line=line, hint="save it as UTF-8 (plain text)")]
    return check_text(text, source)


#: The largest config file read: a config is a few KiB; a device or a wrong file is refused, not read whole.
MAX_CONFIG_BYTES = 1 << 20


def is_secret_name(name: str) -> bool:
    """Whether a key of this name holds a secret: one the schema says is, one whose name says so, or a
    misspelling of one (``pasword``, ``command_tokn``); its line is never shown under an error.

    >>> is_secret_name("command_tokn"), is_secret_name("link_secert"), is_secret_name("record_button")
    (True, True, False)
    """
    return bool(SECRET_NAME.search(name) or difflib.get_close_matches(name, _SECRET_KEYS, cutoff=0.75))


def check_text(text: str, source: str) -> tuple[Config | None, list[Finding]]:
    """``check_file`` for a config's text."""
    raw, syntax, unreadable = decode_all(text, source, is_secret_name)
    config, findings = validate(raw, source, unreadable)
    findings = locate(syntax + findings, text, is_secret_name)
    if syntax:
        return None, findings
    if not raw:
        findings.append(
            Finding(
                source, "sets nothing: every key keeps its default (is it the right file, and saved?)", warning=True
            )
        )
    return config, findings


#: The shortest HTTP Basic password the API takes (tokens are the better way in).
MIN_BASIC_PASSWORD = 12


def _check_basic(http: Mapping[str, Any], check: _Check) -> None:
    """HTTP Basic only with a password worth the name, and never in clear beyond this machine."""
    password = http["password"]
    if len(password) < MIN_BASIC_PASSWORD or patterned(password, max(2, len(set(password)))):
        check.add(
            "http",
            "password",
            "(hidden)",
            f"a Basic password of at least {MIN_BASIC_PASSWORD} characters that is not a repeated pattern "
            '(or bearer tokens: python3 -c "import secrets; print(secrets.token_urlsafe(32))")',
        )
    host = http["listen"].rpartition(":")[0].strip("[]")
    if not http["tls_cert"] and not is_loopback(host) and not host.startswith("127."):
        check.add(
            "http",
            "username",
            http["username"],
            "HTTP Basic over plain HTTP sends the password in clear on the network: set tls_cert and tls_key, "
            "or listen on 127.0.0.1",
        )


def derived_device_id() -> str:
    """``er-`` and 8 hex digits from the board's serial number (or the machine id)."""
    for path, pattern in (
        ("/proc/device-tree/serial-number", None),
        ("/proc/cpuinfo", re.compile(r"^Serial\s*:\s*([0-9a-fA-F]+)", re.MULTILINE)),
        ("/etc/machine-id", None),
    ):
        try:
            text = Path(path).read_text(errors="replace").strip("\x00\n ")
        except OSError:
            continue
        if pattern is not None:
            match = pattern.search(text)
            text = match.group(1) if match else ""
        if text.strip("0"):
            return "er-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return "er-00000000"


def describe() -> str:
    """Every section and key with its default, as TOML with comments."""
    lines = []
    for name in SCHEMA:
        lines.append(f"[{name}]")
        if name == "recording":
            lines.append("# start options for button, DTMF and automatic recordings:")
            lines += [f"# {entry.key} = {_toml(entry.default)}" for entry in _entries(name)]
        else:
            for entry in _entries(name):
                lines += [f"# {entry.help}", f"{entry.key} = {_toml(entry.default)}"]
        lines.append("")
    lines.append("# [destinations.NAME]: more upload destinations, each with its own credentials, e.g.:")
    lines.append("# [destinations.archive]")
    lines += [f"# {entry.key} = {_toml(entry.default)}  # {entry.help}" for entry in _entries("destinations")]
    lines.append("")
    return "\n".join(lines)


# -- the reference (docs/configuration.md) ------------------------------------------------

#: A value no parser accepts: parsing it yields the parser's own words for what it does accept.
_UNACCEPTABLE = object()


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    default: Any
    help: str
    accepted: str
    kind: str
    secret: bool = False


def _entries(section: str) -> list[_Entry]:
    """The keys of ``section`` with their defaults, help, accepted values and TOML type."""
    if section == "recording":
        return [
            _Entry(key, default, OPTION_HELP.get(key, ""), accepted(key), _kind(default))
            for key, default in RecordingOptions().to_dict().items()
        ]
    keys = DESTINATION_SCHEMA if section == "destinations" else SCHEMA[section]
    return [
        _Entry(key, spec.default, spec.help, _accepts(spec.parse), _key_kind(spec), spec.secret)
        for key, spec in keys.items()
    ]


def _accepts(parse: Callable[[Any], Any]) -> str:
    try:
        parse(_UNACCEPTABLE)
    except ValueError as exc:
        return str(exc).removeprefix("expected ")
    raise AssertionError(f"{parse.__qualname__} accepts anything")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list | tuple):
        return "array of strings" if all(isinstance(v, str) for v in value) else "array"
    return "string"


def _key_kind(spec: Key) -> str:
    """The default's TOML type, and the other of integer and string when the key takes both (GPIO pins)."""
    kind = _kind(spec.default)
    other = {"integer": ("string", ""), "string": ("integer", 0)}.get(kind)
    if other is not None:
        try:
            spec.parse(other[1])
        except ValueError:
            return kind
        return " or ".join(sorted((kind, other[0])))
    return kind


_EXAMPLE = """\
[device]
id = "front-desk"

[audio]
capture = "plughw:CARD=Device,DEV=0"
playback = "plughw:CARD=Device,DEV=0"

[recording]
format = "mp3"
beep = true

[mqtt]
url = "mqtts://broker.example.com:8883"
username = "front-desk"
password = "env:EDGE_RECORDER_MQTT_PASSWORD"

[upload]
destination = "s3://recordings/front-desk/"
s3_endpoint = "https://s3.eu-west-1.amazonaws.com"
"""


def reference() -> str:
    """The configuration reference in Markdown (``docs/configuration.md``), made from ``SCHEMA``.

    Defaults and accepted values are the parsers' own, so the page says what
    ``edge-recorder config check`` enforces.
    """
    secrets = [f"`[{name}] {e.key}`" for name in SCHEMA for e in _entries(name) if e.secret]
    secrets += [f"`[destinations.NAME] {e.key}`" for e in _entries("destinations") if e.secret]
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from firmware/config.py by `edge-recorder config reference`; do not edit by hand. -->",
        "",
        f"The box reads one TOML file, `{DEFAULT_PATH}`. The `--config FILE` option or the `{ENV_VAR}` "
        "environment variable points it at another one; a file named that way must exist, while the default "
        "file may be absent. Every key has a default that works on a stock Raspberry Pi with a USB audio "
        "interface, so a file holds only what differs:",
        "",
        "```toml",
        *_EXAMPLE.splitlines(),
        "```",
        "",
        "Unknown sections and keys are errors, so a typo never falls back to a default silently. "
        "`edge-recorder config check FILE` validates a file: a bad value is reported on one line that names "
        "the section, the key, the value and what would be accepted, and the command exits with 78 (EX_CONFIG). "
        "The daemon checks the same way at start and exits with 78 on a bad file, which systemd does not "
        "restart. `edge-recorder config defaults` prints every key with its default as TOML.",
        "",
        "`systemctl reload edge-recorder` (SIGHUP) reads the file again while the box runs: "
        + _join([f"`[{name}]`" for name in RELOADABLE_SECTIONS])
        + " change at once, the other sections at the next restart, and a bad file is refused while the "
        "running configuration stays.",
        "",
        'Secrets need not be written into the file: each of them may be given as `"file:/path"` (all of the '
        "file's text, without the whitespace around it such as the final newline; a regular file of at most "
        "64 KiB of UTF-8) or "
        '`"env:NAME"` (an environment variable). They are ' + _join(secrets) + ".",
        "",
        "Sections: "
        + ", ".join(f"[`[{name}]`](#{name})" for name in SCHEMA)
        + " and [`[destinations.NAME]`](#destinationsname).",
    ]
    for name in [*SCHEMA, "destinations"]:
        out += ["", f"## `[{name}.NAME]`" if name == "destinations" else f"## `[{name}]`", ""]
        if name == "destinations":
            out += [
                "Upload destinations besides `[upload] destination`, each a table with its own URL and "
                "credentials, as many as needed (`[destinations.archive]`, `[destinations.central]`). A "
                "recording's `destination` start option, and `[recording] destination`, may name one (or "
                '`"default"`, `[upload]`\'s), or give a URL under one (the same scheme, host and port, a path '
                "inside its folder): that URL gets the covering destination's credentials. Any other URL is "
                "refused before the recording starts, so a command can never send the box's credentials "
                "elsewhere. No destination URL may hold a user or password: they go in `token`, or "
                "`username` and `password`.",
                "",
            ]
        if name == "recording":
            out += [
                "Defaults of the start options of every recording. Recordings started by the record button, "
                "a DTMF sequence or a call (`[call] auto_record`) use them as they are; an MQTT `start` command "
                "or an HTTP API request may set each of them for its own recording.",
                "",
            ]
        out += ["| key | type | default | accepted | description |", "| --- | --- | --- | --- | --- |"]
        for e in _entries(name):
            cells = (
                _code(e.key),
                _text_cell(e.kind),
                _code(_toml(e.default)),
                _text_cell(e.accepted),
                _text_cell(e.help),
            )
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _join(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _code(text: str) -> str:
    """A code span in a table cell: only the pipe needs escaping there (GitHub honours that)."""
    return "`" + text.replace("|", "\\|") + "`"


def _text_cell(text: str) -> str:
    """Plain text in a table cell, with the characters Markdown would take for markup escaped."""
    return re.sub(r"([\\*<>|])", r"\\\1", text)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)
