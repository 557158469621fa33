"""``edge-recorder doctor``: the installer's self-test, with a live input level meter.

Each check is a small function that returns a ``Check`` (PASS, WARN, FAIL or
SKIP, what was found, and a one-line hint saying how to fix it). The checks
run in the order an installer fixes things: the config, the capture device,
the input level, the DTMF loop from the playback device back to the capture,
the GPIO panel, the spool, the catalog, provisioning, encryption, the broker,
the upload destination, the clock, and on a box installed in slots the version
(the running and the previous one, and whether the last update is confirmed).
A config that does not load is reported and the other checks go on with the defaults. SKIP means the check had nothing to
test (no playback device, no upload destination); like WARN it does not fail
the run.

The checks look at the box as the daemon would use it but change nothing that
stays: a spool directory made for the check is removed again, a catalog that
does not exist yet is not created, and the upload probe is deleted again where
the destination allows it (``uploads.probe``); a destination that is one
fixed file is not probed at all, since the probe would overwrite it. URLs are
printed without their password. Stop the daemon first
(``sudo systemctl stop edge-recorder``): it holds the capture device, the
playback device and the GPIO pins.

``LevelMeter`` is the meter: it reads periods from any ``Capture`` and keeps
the RMS level, the peak and the share of samples at full scale per channel.

On a pipe or in a file each check is one line in fixed columns (status word,
name, detail; the hint on the next line), never wrapped, with no control
characters: what scripts parse. On a terminal (``Style.of``) a mark and colour
go before the word and lines are wrapped to the terminal's width; while the
level is measured a prompt asks to speak into the line and a live bar counts
down the seconds left (``LiveBar``).

A check that this user cannot do because a file is the daemon's (doctor run as
``pi`` on a box) says so and hints to run doctor as the daemon's user, the
unit's ``User=`` (``access.daemon_user``).

What the DTMF loop plays and how what came back is judged: ``doctor_loop``.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import math
import os
import pwd
import shlex
import shutil
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

import numpy as np

from hal.audio import AlsaPlayback, Capture, DeviceLost, DeviceUnavailable, UnsupportedFormat, WavCapture
from hal.gpio import Panel, PinError

from .. import config as cfg
from ..catalog import Catalog
from ..core import InputLayout
from ..daemon.hardware import HardwareError, open_capture_for
from ..daemon.system import clock_synchronized
from ..delivery.errors import DeliveryError
from ..delivery.routes import upload_destination
from ..destinations import DEFAULT
from ..findings import printable
from .access import daemon_user, may, program, state_directory
from .checks import FULL_SCALE_SAMPLE, Check, Status, db_text
from .run import add_config_argument

if TYPE_CHECKING:
    from ..delivery.uploads import Authentication

#: Seconds the input level is measured for, unless ``--seconds`` says otherwise.
DEFAULT_SECONDS = 5.0
#: Seconds ``--press`` waits for the record button.
PRESS_TIMEOUT = 10.0
#: A channel whose peak stays below this hears nothing (an unplugged cable, the gain turned down).
NO_SIGNAL_PEAK_DBFS = -40.0
#: A channel with more than this share of its samples at full scale is clipping.
CLIPPING_SHARE = 0.001
#: Magnitude of an int16 sample at full scale (either rail: -32768 or 32767).
#: What the recordings of an hour take: 16-bit samples, as the spool's part files hold them.
BYTES_PER_SAMPLE = 2
MB = 1 << 20
SERVICE = "edge-recorder"

#: Seconds the upload probe may take to connect, and then to be answered.
UPLOAD_TIMEOUT = 10.0

DESCRIPTION = (
    "The installer's self-test: the config, the capture device, a live input level meter, a DTMF key played "
    "on the playback device and heard back on the capture, the GPIO pins (--press: the record button), "
    "the spool, the catalog, first-boot provisioning, the encryption key, the MQTT broker, the upload "
    "destination (a small probe file, deleted again where the server allows), the clock and the installed "
    "version (the running and the previous one, and whether the last update is confirmed). One line per "
    "check: PASS, WARN, FAIL or SKIP (nothing to test), what was found, and how to fix it."
)
EPILOG = (
    "exit status: 0 when no check fails (warnings and skips allowed), 1 when at least one fails; --json says the "
    'same in "ok". Stop the daemon first (sudo systemctl stop edge-recorder): it holds the capture and playback '
    "devices and the GPIO pins."
)


# -- the meter ------------------------------------------------------------------------------------------------


def dbfs(amplitude: float) -> float:
    """An amplitude of int16 samples in dBFS (32768 is 0 dBFS), -inf for 0.

    >>> round(dbfs(3277), 1), dbfs(32768), dbfs(0)
    (-20.0, 0.0, -inf)
    """
    return 20 * math.log10(amplitude / 32768.0) if amplitude > 0 else -math.inf


class LevelMeter:
    """RMS level, peak and samples at full scale per channel, from the int16 frames fed to it.

    RMS uses the same reference as ``hal.audio.level_dbfs`` (a full-scale
    square wave is 0 dBFS), so a sine's RMS reads 3 dB below its peak.
    ``read`` feeds it from an open capture.

    >>> t = np.arange(8000) / 8000
    >>> tone = (3277 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16).reshape(-1, 1)
    >>> meter = LevelMeter(8000, 1)
    >>> meter.feed(tone)
    >>> [round(x, 1) for x in meter.rms_dbfs()], [round(x, 1) for x in meter.peak_dbfs()], meter.seconds
    ([-23.0], [-20.0], 1.0)
    """

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames = 0
        self._squares = np.zeros(channels)
        self._peak = np.zeros(channels, dtype=np.int64)
        self._clipped = np.zeros(channels, dtype=np.int64)

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def feed(self, frames: np.ndarray) -> None:
        """Measure int16 frames of shape (n, channels)."""
        if len(frames) == 0:
            return
        wide = np.asarray(frames, dtype=np.int64).reshape(len(frames), self.channels)
        magnitude = np.abs(wide)
        self._squares += np.einsum("ij,ij->j", wide, wide).astype(np.float64)
        self._peak = np.maximum(self._peak, magnitude.max(axis=0))
        self._clipped += (magnitude >= FULL_SCALE_SAMPLE).sum(axis=0)
        self.frames += len(frames)

    def rms_dbfs(self) -> list[float]:
        if self.frames == 0:
            return [-math.inf] * self.channels
        return [10 * math.log10(s / self.frames / 32768.0**2) if s else -math.inf for s in self._squares]

    def peak_dbfs(self) -> list[float]:
        return [dbfs(int(p)) for p in self._peak]

    def clipped_share(self) -> list[float]:
        return [int(c) / self.frames if self.frames else 0.0 for c in self._clipped]

    def read(
        self,
        capture: Capture,
        seconds: float,
        on_period: Callable[[np.ndarray], None] | None = None,
    ) -> bool:
        """Read ``seconds`` of audio from the open ``capture`` (paced by it); True if the input ended first.

        ``on_period`` gets each period's frames, e.g. to draw a meter.
        ``DeviceLost`` is raised as it comes; what was read until then is measured.
        """
        wanted = self.frames + round(seconds * self.sample_rate)
        while self.frames < wanted:
            chunk = capture.read()
            if chunk is None:
                return True
            frames = chunk.frames[: wanted - self.frames]
            self.feed(frames)
            if on_period is not None:
                on_period(frames)
        return False


class LiveBar:
    """Redraws one line with a bar and the level of each channel, about ten times a second of audio, and with
    ``seconds`` the seconds of it left to measure.

    For a terminal only: it moves back with ``\\r``. ``finish`` clears the line. With the terminal's width
    (``style.columns``) the bars are as wide as fits, and the line never reaches the last column.
    """

    FLOOR_DBFS = -60.0

    def __init__(
        self,
        stream: TextIO,
        sample_rate: int,
        labels: list[str],
        seconds: float | None = None,
        style: Style | None = None,
    ) -> None:
        self.stream = stream
        self.labels = labels
        self.seconds = seconds
        self.style = style or Style()
        self.sample_rate = sample_rate
        self.frames = 0
        self.width = 30 if len(labels) == 1 else 6  # two channels still fit in 80 columns
        self._head = self.style.head("....", "input level")
        if self.style.columns is not None:
            room = self._room()
            if room < 3:  # a narrow terminal: the bars alone (the prompt above says what they measure)
                self._head = ""
                room = self._room()
            self.width = max(3, min(self.width, room))
        self._every = max(1, sample_rate // 10)
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._drawn = 0

    def __call__(self, frames: np.ndarray) -> None:
        self._pending.append(frames)
        self._pending_frames += len(frames)
        self.frames += len(frames)
        if self._pending_frames >= self._every:
            self.draw(np.concatenate(self._pending))
            self._pending, self._pending_frames = [], 0

    def draw(self, frames: np.ndarray) -> None:
        meter = LevelMeter(1, frames.shape[1])
        meter.feed(frames)
        line = self._line(meter.rms_dbfs(), self.width)
        if self.style.columns is not None:
            line = line[: self.style.columns - 1]
        self._drawn = len(line)
        self.stream.write("\r" + line)
        self.stream.flush()

    def _room(self) -> int:
        """The width each channel's bar may have on the terminal's line."""
        fixed = len(self._line([-math.inf] * len(self.labels), 0))
        return (self.style.columns - 1 - fixed) // len(self.labels)

    def _line(self, levels: list[float], width: int) -> str:
        parts = []
        for label, level in zip(self.labels, levels, strict=True):
            filled = round(width * (max(level, self.FLOOR_DBFS) - self.FLOOR_DBFS) / -self.FLOOR_DBFS)
            bar = "#" * filled + "-" * (width - filled)
            parts.append(f"{label + ' ' if label else ''}[{bar}] {db_text(level):>6}")
        text = "  ".join(parts) + " dBFS"
        if self.seconds is not None:
            left = max(0, math.ceil(self.seconds - self.frames / self.sample_rate - 1e-9))
            text += f"  {left} s left"
        return self._head + text

    def finish(self) -> None:
        if os.environ.get("TERM") == "dumb":  # no erase-line sequence there: overwrite with spaces
            self.stream.write("\r" + " " * self._drawn + "\r")
        else:
            self.stream.write("\r\x1b[K")
        self.stream.flush()


# -- the checks -----------------------------------------------------------------------------------------------


def check_config(path: str | Path | None) -> tuple[Check, cfg.Config]:
    """Load and validate the config; on an error, the checks go on with the defaults."""
    try:
        config = cfg.load(path)
    except (cfg.ConfigError, PermissionError) as exc:
        if isinstance(exc, PermissionError):
            exc = f"{exc.filename}: cannot be read: {exc.strerror}"
        file = Path(path or os.environ.get(cfg.ENV_VAR) or cfg.DEFAULT_PATH)
        hint = None
        if _denied(file, os.R_OK):  # a box's config is root:edge-recorder 0640: its group names the recorder's user
            hint = _daemon_may(file, os.R_OK, cfg.defaults(), file, also=_group_user(file))
        hint = hint or "fix the file (edge-recorder config check shows every key and its default)"
        return Check("config", Status.FAIL, f"{exc}; the checks below use the defaults", hint), cfg.defaults()
    if config.source == "defaults":
        return Check("config", Status.PASS, f"no {cfg.DEFAULT_PATH}: every key has its default"), config
    return Check("config", Status.PASS, f"{config.source} is valid"), config


def check_capture(config: cfg.Config) -> tuple[Check, Capture | None]:
    """Open the capture device at the configured rate and channels; the open capture is returned for the meter."""
    name = "capture device"
    sim = config.sim
    if sim["enabled"] and sim["capture"] == "wav" and not sim["audio"]:
        detail = "simulated, with no [sim] audio: the daemon plays its built-in demo call"
        return Check(name, Status.WARN, detail, "set [sim] audio to a WAV file to measure its level"), None
    try:
        capture, what = open_capture_for(config)
        capture.open()
    except UnsupportedFormat as exc:
        hint = "use the card's plughw: name so ALSA converts, e.g. plughw:CARD=Device,DEV=0 (edge-recorder devices)"
        return Check(name, Status.FAIL, str(exc), hint), None
    except (DeviceUnavailable, HardwareError) as exc:  # HardwareError: a [sim] audio file that cannot be used
        return Check(name, Status.FAIL, str(exc), _capture_hint(config, str(exc))), None
    rate, period = capture.sample_rate, capture.period_frames
    detail = f"{what}: {rate} Hz, {capture.channels} ch, {period}-frame periods ({1000 * period / rate:g} ms)"
    if isinstance(capture, WavCapture):
        detail += f", {capture.frames / rate:.1f} s of audio"
    return Check(name, Status.PASS, detail), capture


def _capture_hint(config: cfg.Config, error: str) -> str:
    if config.sim["enabled"] and config.sim["capture"] == "wav":
        audio = Path(config.sim["audio"])
        hint = _daemon_may(audio, os.R_OK, config) if _denied(audio, os.R_OK) else None
        return hint or "set [sim] audio to a WAV file with 1 or 2 channels (any rate: it is converted)"
    return _device_hint(
        error,
        "check the USB audio interface is plugged in; `edge-recorder devices` lists the capture PCMs: "
        "set [audio] capture to one, e.g. plughw:CARD=Device,DEV=0",
    )


def _device_hint(error: str, otherwise: str) -> str:
    """The hint for an audio device that does not open: the daemon holding it, else ``otherwise``."""
    if "busy" in error.lower():
        return f"something else holds the device: stop the daemon first (sudo systemctl stop {SERVICE})"
    return otherwise


def channel_labels(config: cfg.Config, channels: int) -> list[str]:
    """What each capture channel carries, for the meter: "" for mono, else inbound/outbound.

    >>> channel_labels(cfg.defaults().replace(audio={"channels": 2}), 2)
    ['inbound', 'outbound']
    """
    if channels == 1:
        return [""]
    roles = {config.audio["inbound_channel"]: "inbound", config.audio["outbound_channel"]: "outbound"}
    if config.audio["channels"] == 2 and len(roles) == 2:
        return [roles[i] for i in range(channels)]
    return [f"ch{i}" for i in range(channels)]


def check_level(
    capture: Capture,
    seconds: float,
    labels: list[str] | None = None,
    on_period: Callable[[np.ndarray], None] | None = None,
) -> Check:
    """Measure the input for ``seconds`` (less if it ends): RMS and peak per channel, no signal, clipping."""
    name = "input level"
    labels = labels or [""] * capture.channels
    meter = LevelMeter(capture.sample_rate, capture.channels)
    lost = ""
    try:
        ended = meter.read(capture, seconds, on_period)
    except DeviceLost as exc:
        ended, lost = True, str(exc)
    if lost and meter.frames == 0:
        return Check(name, Status.FAIL, lost, "check the USB audio interface and its cable, then run doctor again")
    if meter.frames == 0:
        return Check(name, Status.WARN, "the input ended before any audio was read", "give it more audio")
    return level_check(meter, labels, ended=ended and not lost, lost=lost, overruns=capture.overruns)


def level_check(
    meter: LevelMeter, labels: list[str], *, ended: bool = False, lost: str = "", overruns: int = 0
) -> Check:
    """The ``input level`` check from what ``meter`` measured."""
    levels, problems, hints = [], [], []
    for label, rms, peak, clipped in zip(
        labels, meter.rms_dbfs(), meter.peak_dbfs(), meter.clipped_share(), strict=True
    ):
        prefix = f"{label}: " if label else ""
        levels.append(f"{prefix}RMS {db_text(rms)} dBFS, peak {db_text(peak)} dBFS")
        if peak < NO_SIGNAL_PEAK_DBFS:
            problems.append(f"{prefix}no signal (peak below {NO_SIGNAL_PEAK_DBFS:g} dBFS)")
            hints.append("no signal: check the cable / input gain")
        elif clipped > CLIPPING_SHARE:
            problems.append(f"{prefix}clipping ({100 * clipped:.1f} % of samples at full scale)")
            hints.append("clipping: lower the input gain")
    detail = "; ".join(levels) + f" over {meter.seconds:.1f} s"
    if ended:
        detail += " (the input ended)"
    if overruns:
        detail += f"; {overruns} overrun{'s' if overruns > 1 else ''}"
    if lost:
        problems.append(f"then the device was lost: {lost}")
        hints.append("check the USB audio interface and its cable")
    if not problems:
        return Check("input level", Status.PASS, detail)
    status = Status.FAIL if lost else Status.WARN
    return Check("input level", status, detail + "; " + "; ".join(problems), "; ".join(dict.fromkeys(hints)))


def check_dtmf_loop(config: cfg.Config) -> Check:
    """Play a DTMF key on the playback device while capturing; PASS when the core's detector hears it come back.

    The key goes out where the box's tones go (``[audio] playback``) and can
    only come back if the playback reaches the line or input the capture
    hears: this proves the whole path a key on the line takes, through the
    same ``Recorder`` (and so the same DTMF detector and tracks) the daemon
    runs. ``doctor_loop.LOOP_SECONDS`` are played (silence, the key, silence)
    and exactly as many captured, from a capture opened for the check.
    """
    from .doctor_loop import loop_check, loop_sound  # not at the top: it builds on Check and Status

    name = "dtmf loop"
    a, sim = config.audio, config.sim
    if sim["enabled"] and sim["playback"]:
        return Check(
            name,
            Status.SKIP,
            f"not tested: [sim] playback is a WAV file ({sim['playback']}), no line back to the capture",
        )
    if not a["playback"]:
        return Check(name, Status.SKIP, "not tested: no playback device ([audio] playback is empty)")
    if sim["enabled"] and sim["capture"] == "wav":
        return Check(name, Status.SKIP, "not tested: the simulated capture is a WAV file, it cannot hear the playback")
    capture, _ = open_capture_for(config)
    try:
        capture.open()
    except DeviceUnavailable:
        return Check(name, Status.SKIP, "not tested: the capture device does not open (see above)")
    try:
        playback = AlsaPlayback(a["playback"], capture.sample_rate)
        try:
            playback.open()
        except DeviceUnavailable as exc:
            return Check(name, Status.FAIL, str(exc), _playback_hint(str(exc)))
        sound = loop_sound(capture.sample_rate, capture.period_frames)
        try:
            playback.play(sound)
            heard = _read_frames(capture, len(sound))
        except DeviceLost as exc:
            return Check(name, Status.FAIL, str(exc), "check the USB audio interface and its cable")
        finally:
            playback.close()
    finally:
        capture.close()
    layout = InputLayout(capture.sample_rate, capture.channels, a["inbound_channel"], a["outbound_channel"])
    return loop_check(heard, layout, a["playback"], channel_labels(config, capture.channels))


def _read_frames(capture: Capture, frames: int) -> np.ndarray:
    """Up to ``frames`` frames from the open ``capture`` (fewer if its input ends)."""
    chunks: list[np.ndarray] = []
    LevelMeter(capture.sample_rate, capture.channels).read(capture, frames / capture.sample_rate, chunks.append)
    return np.concatenate(chunks) if chunks else np.zeros((0, capture.channels), np.int16)


def _playback_hint(error: str) -> str:
    return _device_hint(
        error,
        "`edge-recorder devices` lists the playback PCMs: set [audio] playback to one, e.g. plughw:CARD=Device,DEV=0, "
        "or leave it empty on a box that plays no tones",
    )


def check_gpio(config: cfg.Config) -> tuple[Check, Panel | None]:
    """Claim the panel's pins as the daemon would (mock pins with ``[sim] enabled``); the panel is returned open."""
    g, sim = config.gpio, config.sim
    if not g["enabled"] and not sim["enabled"]:
        return Check("gpio", Status.PASS, "disabled ([gpio] enabled = false)"), None
    factory = "mock" if sim["enabled"] else g["pin_factory"] or None
    wired = {role: g[role] for role in ("record_button", "pause_button", "hook_switch", "led", "buzzer")}
    try:
        with warnings.catch_warnings():
            # gpiozero warns about each default factory it cannot load; the outcome is what we report.
            warnings.simplefilter("ignore")
            panel = Panel(
                **wired,
                hook_off_hook_contact=g["hook_off_hook"],
                pin_factory=factory,
                bounce_s=g["bounce_ms"] / 1000,
                hook_bounce_s=g["hook_bounce_ms"] / 1000,
                hold_s=g["hold_seconds"] or None,
                active_high=g["active_high"],
            )
    except Exception as exc:  # PinError, and gpiozero raises several kinds when there is no GPIO at all
        text = str(exc) if isinstance(exc, PinError) else f"{type(exc).__name__}: {exc}"
        if "already used" in text or "busy" in text.lower():
            hint = "another process holds the pin: stop the daemon first (sudo systemctl stop edge-recorder)"
        else:
            hint = (
                'set [gpio] pin_factory ("lgpio" on a Raspberry Pi), or [gpio] enabled = false on a box without buttons'
            )
        return Check("gpio", Status.FAIL, text, hint), None
    pins = ", ".join(f"{role} {pin}" for role, pin in wired.items() if pin is not None) or "no pins wired"
    how = "mock pins ([sim] enabled)" if factory == "mock" else f"pin factory {factory or 'gpiozero default'}"
    return Check("gpio", Status.PASS, f"claimed {pins} with {how}"), panel


@contextlib.contextmanager
def gpio_working_directory() -> Iterator[Path | None]:
    """A working directory gpiozero's lgpio pin factory can create its pipes in, while the GPIO checks run.

    lgpio makes its notification pipes (``.lgd-nfy*``) in ``$LG_WD`` (the C library) and opens them
    relative to the working directory (the Python module), so both must be one writable directory;
    the daemon's unit sets them to /run/edge-recorder. ``sudo -u edge-recorder edge-recorder doctor``
    keeps the caller's directory (/home/pi), which that user cannot write: the claim fails, or gpiozero
    quietly falls back to another factory and doctor would not test what the daemon uses. So when the
    current directory is not writable, the checks move to a new temporary directory (and LG_WD to it,
    unless set), which is removed again afterwards, and the caller's directory and LG_WD are restored.
    Yields that directory, or None when the current one serves.
    """
    # access(2) itself, by the real ids (the effective ones under sudo -u): the kernel also applies the
    # capabilities, where glibc's emulation of effective_ids=True without faccessat2 lets root write anywhere.
    if os.access(".", os.W_OK | os.X_OK):
        yield None
        return
    try:
        here: str | None = os.getcwd()
    except OSError:  # removed under us
        here = None
    try:
        work = tempfile.mkdtemp(prefix="edge-recorder-doctor-")
    except OSError:
        work = None  # nowhere better: the GPIO check reports what fails
    if work is None:
        yield None
        return
    lg_wd = os.environ.get("LG_WD")
    os.chdir(work)
    if lg_wd is None:
        os.environ["LG_WD"] = work
    try:
        yield Path(work)
    finally:
        if lg_wd is None:
            os.environ.pop("LG_WD", None)
        try:
            os.chdir(here or "/")
        except OSError:
            os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)


def check_press(panel: Panel, timeout: float = PRESS_TIMEOUT) -> Check:
    """Wait up to ``timeout`` seconds for the record button to be pressed (and debounced)."""
    name = "record button"
    if not panel.wired("record_button"):
        return Check(name, Status.WARN, "no record button wired", "set [gpio] record_button to its pin")
    pressed = threading.Event()
    before = panel.on_record, panel.on_record_hold
    panel.on_record = panel.on_record_hold = pressed.set
    started = time.monotonic()
    try:
        while not pressed.is_set() and time.monotonic() - started < timeout:
            panel.tick()
            pressed.wait(0.01)
    finally:
        panel.on_record, panel.on_record_hold = before
    if pressed.is_set():
        return Check(name, Status.PASS, f"pressed after {time.monotonic() - started:.1f} s")
    hint = "check the button connects [gpio] record_button to ground (to 3.3 V: set [gpio] active_high = true)"
    return Check(name, Status.FAIL, f"no press in {timeout:g} s", hint)


def check_spool(config: cfg.Config) -> Check:
    """The spool directory can be created and written, and how much audio its free space holds."""
    directory = Path(config.spool["directory"])
    created: list[Path] = []
    try:
        for path in [*reversed(directory.parents), directory]:
            if not path.exists():
                path.mkdir()
                created.append(path)
        _probe(directory)
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = (
            f"create it for the daemon's user (sudo install -d -o {SERVICE} -g {SERVICE} {directory}) "
            "or set [spool] directory to a writable place"
        )
        if isinstance(exc, PermissionError):
            hint = _daemon_may(directory, os.W_OK | os.X_OK, config) or hint
        where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != directory else ""
        return Check("spool", Status.FAIL, f"cannot use {directory}: {reason}{where}", hint)
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()
    a = config.audio
    min_free = config.spool["min_free_mb"] * MB
    per_hour = a["sample_rate"] * a["channels"] * BYTES_PER_SAMPLE * 3600
    hours = max(0, free - min_free) / per_hour
    rate_text = f"{a['sample_rate']} Hz {'mono' if a['channels'] == 1 else 'stereo'}"
    detail = (
        f"{directory}: {'can be created and written' if created else 'writable'}, {_size(free)} free "
        f"(min_free_mb {config.spool['min_free_mb']}), about {hours:,.1f} hours of {rate_text} audio"
    )
    if os.geteuid() == 0:
        detail += f"; checked as root, the daemon runs as {SERVICE}"
    if free < min_free:
        hint = "free space: delete or upload old recordings, or put [spool] directory on a bigger disk"
        return Check("spool", Status.FAIL, detail + "; recording stops below min_free_mb", hint)
    if free < 10 * min_free:
        hint = "free space is short: delete or upload old recordings, or put [spool] directory on a bigger disk"
        return Check("spool", Status.WARN, detail + "; less than 10 times min_free_mb", hint)
    return Check("spool", Status.PASS, detail)


def _probe(directory: Path) -> None:
    """Create, fsync and delete a file: what the spool does with every recording."""
    probe = directory / f".doctor-{os.getpid()}.probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"\0" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()


def check_catalog(config: cfg.Config) -> Check:
    """The catalog opens and SQLite's integrity check is ok; an absent one is not created."""
    path = Path(config.catalog["path"])
    if _denied(path, os.R_OK | os.W_OK):
        hint = _daemon_may(path, os.R_OK | os.W_OK, config) or f"make it the daemon's: sudo chown {SERVICE}: {path}"
        return Check("catalog", Status.FAIL, f"{path}: permission denied: this user may not read and write it", hint)
    if not path.exists():
        return Check("catalog", Status.PASS, f"{path}: not created yet (the daemon creates it)")
    hint = (
        "the daemon moves a corrupt catalog aside and rebuilds it from the spool on its next start; "
        "or restore it from a backup"
    )
    try:
        catalog = Catalog(path)
        try:
            result, version = catalog.integrity(), catalog.version
        finally:
            catalog.close()
    except Exception as exc:  # sqlite3.DatabaseError, CatalogError, OSError: all mean it cannot be used
        return Check("catalog", Status.FAIL, f"{path}: {exc}", hint)
    if result != "ok":
        return Check("catalog", Status.FAIL, f"{path}: integrity check says {result.splitlines()[0]}", hint)
    return Check("catalog", Status.PASS, f"{path}: integrity ok, schema version {version}")


def check_provisioning(config: cfg.Config) -> Check:
    """What first-boot provisioning left to report (``provision.read_marker``): a config file on the boot
    partition it refused, one it could not install, or copies of one it could not remove from the card."""
    from .. import provision

    marker = Path(config.spool["directory"]).parent / provision.MARKER.name
    if _denied(marker, os.R_OK):
        hint = _daemon_may(marker, os.R_OK, config) or f"run doctor as the daemon's user ({SERVICE}) or as root"
        return Check("provisioning", Status.WARN, f"not checked: this user may not read {marker}", hint)
    problem = provision.read_marker(marker)
    if problem is None:
        return Check("provisioning", Status.PASS, "no refused config file")
    boot_file = problem.get("boot_file") or f"{provision.REJECTED} on the boot partition"
    code = problem.get("code")
    if code == "provision_failed":
        # The request is good and stays on the card; the next boot tries it again (no .error.txt).
        return Check(
            "provisioning",
            Status.FAIL,
            f"{problem['message']} (the box runs on its previous config)",
            f"make sure {provision.CONFIG_DIR} is a folder root can write and the disk is not full "
            f"(sudo journalctl -u edge-recorder-provision says what failed), then reboot: {boot_file} is still "
            "there and is applied then",
        )
    if code == "provision_left_secrets":
        # Applied: the box runs on the new config; nothing on the card says so, and no later boot clears this.
        return Check(
            "provisioning",
            Status.FAIL,
            f"{problem['message']} (the new config is in use)",
            "delete the files named above from the boot partition, as they may hold secrets (on the box with "
            f"sudo rm, or from the card on a computer); then sudo rm {marker}",
        )
    return Check(
        "provisioning",
        Status.FAIL,
        f"{problem['message']} (the box runs on its previous config)",
        f"fix {boot_file} as {provision.ERROR_TEXT} beside it says, rename it back to {provision.REQUEST} and reboot",
    )


def check_encryption(config: cfg.Config) -> Check:
    """With encryption on, the public key must be usable: the box refuses to record without it."""
    value = config.encryption["public_key"]
    if not value:
        return Check("encryption", Status.PASS, "off: recordings are kept as plain audio")
    from ..media.encrypted import check_recipient

    try:
        recipient = check_recipient(value)
    except ValueError as exc:
        return Check(
            "encryption",
            Status.FAIL,
            f"[encryption] public_key: {exc}; the box refuses to record",
            'put the central side\'s age recipient ("age1...", from age-keygen -y) in [encryption] public_key',
        )
    return Check("encryption", Status.PASS, f"recordings are encrypted to {recipient[:16]}...")


def check_broker(config: cfg.Config, timeout: float = 5.0) -> Check:
    """The MQTT broker answers and accepts the box's credentials; or delivery is off, said plainly."""
    m = config.mqtt
    if not m["url"]:
        # A destination "mqtt" without [mqtt] url does not load (config check).
        destination, webhook = upload_destination(config), config.events["webhook"]
        if destination or webhook:
            events = "events go only to the webhook" if webhook else "no events leave the box"
            uploads = "uploads over HTTP/S3" if destination else "no uploads"
            return Check("broker", Status.PASS, f"no [mqtt] url: {events}, {uploads}")
        return Check(
            "broker",
            Status.WARN,
            "delivery is off: no [mqtt] url, no upload destination ([recording] or [upload] destination); "
            "recordings stay in the spool",
            "set [mqtt] url (and [upload] destination) so a central server gets the events and the files",
        )
    import paho.mqtt.client as mqtt

    from ..delivery.mqtt import BrokerSettings

    try:
        s = BrokerSettings.from_url(m["url"])
    except ValueError as exc:
        return Check("broker", Status.FAIL, str(exc), "fix [mqtt] url")
    answer: dict = {}
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{config.device_id}-doctor", protocol=mqtt.MQTTv5)
    client.connect_timeout = timeout

    def on_connect(c, userdata, flags, reason_code, properties):
        answer["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    if m["username"]:
        client.username_pw_set(m["username"], m["password"] or None)
    try:
        if s.tls:
            client.tls_set(
                ca_certs=m["ca_file"] or None, certfile=m["client_cert"] or None, keyfile=m["client_key"] or None
            )
        client.connect(s.host, s.port, keepalive=10)
        client.loop_start()
        done.wait(timeout)
    except (OSError, ValueError) as exc:
        return Check(
            "broker",
            Status.FAIL,
            f"{m['url']}: {exc}",
            "check the broker runs and the box can reach it (host, port, firewall, TLS)",
        )
    finally:
        client.loop_stop()
        client.disconnect()
    rc = answer.get("rc")
    if rc is None:
        return Check(
            "broker", Status.FAIL, f"{m['url']}: no answer in {timeout:g} s", "check the broker's host and port"
        )
    if rc.is_failure:
        return Check(
            "broker",
            Status.FAIL,
            f"{m['url']}: refused: {rc}",
            "check [mqtt] username and password, and the broker's ACL",
        )
    return Check("broker", Status.PASS, f"{m['url']}: connected and authorised")


def check_commands(config: cfg.Config) -> Check:
    """Who may send the box MQTT commands ([mqtt] command_auth and command_token), said plainly.

    >>> check_commands(cfg.parse({"mqtt": {"url": "mqtt://broker", "command_token": "x"}})).detail
    'every command must carry [mqtt] command_token'
    """
    m = config.mqtt
    detail = cfg.command_mode(m)
    if m["command_auth"] == "broker" and m["url"]:
        return Check(
            "commands",
            Status.PASS,
            detail,
            "make sure the broker's ACL lets only the central server publish on this box's cmd topic",
        )
    return Check("commands", Status.PASS, detail)


def check_upload(config: cfg.Config, broker: Check | None = None, timeout: float = UPLOAD_TIMEOUT) -> Check:
    """The upload destination takes a file with the box's credentials: a probe uploaded as recordings go.

    The destination is the one the box's own recordings (the record button,
    DTMF, ``[call] auto_record``) go to, as ``Delivery`` picks it:
    ``upload_destination``. ``mqtt`` uploads go over the broker, so they stand
    or fall with ``broker`` (the broker check's outcome). Where the probe
    lands, how it is deleted again and which destinations it cannot test
    without overwriting a file: ``uploads.probe``. URLs are printed without
    their password.
    """
    destination = upload_destination(config)
    if not destination:
        return Check("upload", Status.SKIP, "no upload destination: finished recordings stay in the spool")
    setting = _destination_setting(config)
    if destination == "mqtt":
        if broker is not None and broker.status is Status.FAIL:
            return Check(
                "upload", Status.FAIL, "mqtt: files go over the broker, which failed above", "fix the broker first"
            )
        return Check(
            "upload",
            Status.PASS,
            "mqtt: files go in chunks over the broker (checked above); a receiver (edge-recorder receive) is not checked",
        )
    from ..delivery.uploads import WouldOverwrite, http_auth, probe, redact

    target = config.upload_destinations().resolve(destination)  # config check made sure it resolves
    assert target is not None
    destination, credentials, method = target.url, target.destination.credentials, target.destination.method
    keys = "[upload]" if target.destination.name == DEFAULT else f"[destinations.{target.destination.name}]"
    how = None if urlsplit(destination).scheme.lower() == "s3" else http_auth(credentials, destination)[0]
    name = f"edge-recorder-doctor-{config.device_id}.probe"
    try:
        result = probe(destination, name, credentials=credentials, method=method, timeout=timeout)
    except WouldOverwrite as exc:
        hint = (
            "check a short test recording arrives; a destination ending in / (no query string) gives each "
            "recording its own name, and doctor can test it"
        )
        return Check("upload", Status.WARN, str(exc), hint)
    except DeliveryError as exc:
        return _upload_failed(setting, keys, how, exc)
    detail = f"{redact(destination)}: took a probe file"
    if how is not None:
        detail += f" ({method.upper()}, {how.value})"
    if result.kept:
        detail += f", left at {redact(result.location)} ({result.kept}): delete it by hand"
    else:
        detail += " and deleted it again"
    return Check("upload", Status.PASS, detail)


def _destination_setting(config: cfg.Config) -> str:
    """The key ``upload_destination`` took the box's destination from, to name it in a hint."""
    return "[recording] destination" if config.recording.destination else "[upload] destination"


def _upload_failed(setting: str, keys: str, how: Authentication | None, exc: DeliveryError) -> Check:
    """The FAIL line for a probe the destination refused; ``keys`` the section with its credentials (``[upload]``
    or ``[destinations.NAME]``), ``how`` the HTTP credential sent (None: S3)."""
    from ..delivery.uploads import Authentication

    s3 = how is None
    if exc.status in (401, 403) and how is Authentication.NONE:
        return Check(
            "upload", Status.FAIL, f"credentials needed: {exc}", f"set {keys} token (or username and password)"
        )
    if exc.status in (401, 403):
        if how is None:
            hint = (
                f"check {keys} s3_access_key and s3_secret_key (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), "
                "and that they may write under the prefix"
            )
        elif how is Authentication.BEARER:
            hint = f"check {keys} token, and that it may write there"
        else:
            hint = f"check {keys} username and password, and that they may write there"
        return Check("upload", Status.FAIL, f"{'S3 keys' if s3 else how.value} refused: {exc}", hint)
    if exc.status == 404:
        hint = f"create the bucket, or fix {setting}" if s3 else f"fix the path in {setting}"
        return Check("upload", Status.FAIL, f"not found: {exc}", hint)
    if exc.status is None and not exc.permanent:
        hint = "check the server runs and the box can reach it (address, port, DNS, firewall, proxy)"
        if s3:
            hint += f" and {keys} s3_endpoint"
        hint += "; for a TLS error, the box's clock and the server's certificate"
        return Check("upload", Status.FAIL, f"unreachable: {exc}", hint)
    if exc.status is not None and exc.status >= 500:
        return Check("upload", Status.FAIL, str(exc), "the server failed: see its logs (uploads are retried meanwhile)")
    return Check("upload", Status.FAIL, str(exc), f"fix {setting} and its credentials as the error says")


def check_clock() -> Check:
    if clock_synchronized():
        return Check("clock", Status.PASS, "synchronised")
    hint = (
        "enable systemd-timesyncd (sudo timedatectl set-ntp true) and check the NTP server is reachable; "
        "recordings store whether the clock was synchronised"
    )
    return Check("clock", Status.WARN, "not synchronised: recording times may be off", hint)


def check_version(root: Path = Path("/")) -> Check | None:
    """The running version and the one kept before it, and what became of the last update
    (``firmware.update.state``): confirmed, pending, or switched back and why. None where edge-recorder is not
    installed in slots (a checkout): there are no versions to tell apart."""
    from ..update.slots import Layout
    from ..update.state import Phase, status

    box = Layout(root)
    last = status(box)
    if last.running is None:
        return None
    detail = last.summary()
    if last.previous is not None:
        detail += f"; previous: edge-recorder {last.previous.version} (slot {last.previous.name})"
    if last.phase is Phase.PENDING:
        return Check(
            "version",
            Status.WARN,
            detail,
            "leave the daemon running: it confirms the update once it has recorded healthily for [update] "
            "confirm_seconds (sudo systemctl start edge-recorder, once doctor is done)",
        )
    if last.phase in (Phase.ROLLED_BACK, Phase.ROLLING_BACK):
        return Check(
            "version",
            Status.WARN,
            detail,
            f"sudo journalctl -u {SERVICE} says why the new version failed; update again with a release that fixes "
            "it (edge-recorder update --status)",
        )
    return Check("version", Status.PASS, detail)


def _denied(path: Path, access: int) -> bool:
    """Whether this user may not ``access`` ``path`` (``os.R_OK``, ``os.W_OK``) that is there, or may not even
    look whether it is there; False for a path that is simply missing."""
    try:
        path.stat()
    except PermissionError:
        return True
    except OSError:
        return False
    return not os.access(path, access)


def _daemon_may(
    path: Path,
    access: int,
    config: cfg.Config,
    config_path: str | Path | None = None,
    also: pwd.struct_passwd | None = None,
) -> str | None:
    """The hint for a ``path`` this user may not ``access`` and the daemon's user may: run doctor as that user,
    the unit's ``User=`` (``access.daemon_user``: the owner of the state directory; else ``also``, when the state
    directory is not known). None when the daemon's user may not either, or is this user, or there is none."""
    me = os.geteuid()
    users = [u for u in (daemon_user(state_directory(config)), also) if u is not None and u.pw_uid != me]
    user = next((u for u in users if may(u, path, access)), None)
    if user is None:
        return None
    source = str(config_path) if config_path is not None else config.source
    command = f"sudo -u {user.pw_name} {program()} doctor"
    if source not in ("defaults", str(cfg.DEFAULT_PATH)):
        command += f" --config {shlex.quote(source)}"
    return f"run doctor as the recorder's user, {user.pw_name} (the unit's User=), who may: {command}"


def _group_user(path: Path) -> pwd.struct_passwd | None:
    """The user of the same name as ``path``'s group, if there is one."""
    try:
        return pwd.getpwnam(grp.getgrgid(path.stat().st_gid).gr_name)
    except (OSError, KeyError):
        return None


# -- the command ----------------------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="installer self-test: config, audio (level meter, DTMF loop), GPIO, storage, delivery, clock",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    add_config_argument(p)
    p.add_argument(
        "--seconds",
        type=_seconds,
        default=DEFAULT_SECONDS,
        metavar="N",
        help=f"measure the input level for N seconds (default {DEFAULT_SECONDS:g})",
    )
    p.add_argument(
        "--press", action="store_true", help=f"also wait up to {PRESS_TIMEOUT:g} s for a press of the record button"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"ok": ..., "checks": [{"name", "status", "detail", "hint"}, ...]} instead of text',
    )
    p.set_defaults(run=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds from 0 to 3600")
    return value


def run(args: argparse.Namespace) -> int:
    """Run every check in order, print them as they finish (or as JSON at the end); 0 if none fails."""
    out = sys.stdout
    text = not args.json
    style = Style.of(out) if text else Style()
    checks: list[Check] = []
    config_check, config = check_config(args.config)

    def report(check: Check) -> None:
        if config_check.status is Status.FAIL and checks:
            check = replace(check, detail=check.detail + " [default config]")
        checks.append(check)
        if text:
            out.write(style.check(check))
            out.flush()

    report(config_check)
    capture_check, capture = check_capture(config)
    report(capture_check)
    if capture is None:
        report(Check("input level", Status.WARN, "not measured: no capture", "fix the capture device first"))
    else:
        try:
            report(_measure(config, capture, args.seconds, out if text and out.isatty() else None, style))
        finally:
            capture.close()
    report(check_dtmf_loop(config))

    with gpio_working_directory():
        gpio_check, panel = check_gpio(config)
        report(gpio_check)
        if panel is not None:
            try:
                if args.press:
                    report(_press(config, panel, out if text else sys.stderr, style if text else Style()))
            finally:
                panel.close()

    report(check_spool(config))
    report(check_catalog(config))
    report(check_provisioning(config))
    report(check_encryption(config))
    broker = check_broker(config)
    report(broker)
    report(check_commands(config))
    report(check_upload(config, broker))
    report(check_clock())
    version = check_version()
    if version is not None:
        report(version)

    ok = all(c.status is not Status.FAIL for c in checks)
    if text:
        counts = {s: sum(c.status is s for c in checks) for s in Status}
        skipped = f", {counts[Status.SKIP]} skipped" if counts[Status.SKIP] else ""
        out.write(
            style.paragraph(
                f"{counts[Status.PASS]} passed, {counts[Status.WARN]} warnings{skipped}, {counts[Status.FAIL]} failed"
                + ("" if ok else ": fix the FAIL lines and run edge-recorder doctor again")
            )
        )
    else:
        out.write(json.dumps({"ok": ok, "checks": [c.as_dict() for c in checks]}, indent=2) + "\n")
    return 0 if ok else 1


def _measure(
    config: cfg.Config, capture: Capture, seconds: float, terminal: TextIO | None, style: Style | None = None
) -> Check:
    """The level check; on ``terminal`` a prompt to speak, then a live bar counting down the seconds left
    (None: neither, the check's line is the summary)."""
    labels = channel_labels(config, capture.channels)
    if terminal is None:
        return check_level(capture, seconds, labels)
    style = style or Style()
    if isinstance(capture, WavCapture):
        prompt = f"Listening to the simulated input, {capture.path}, for {seconds:g} s..."
    else:
        prompt = f"Speak into the line now (or play something on it): listening for {seconds:g} s..."
    terminal.write(style.row("....", "input level", prompt))
    bar = LiveBar(terminal, capture.sample_rate, labels, seconds, style)
    try:
        return check_level(capture, seconds, labels, bar)
    finally:
        bar.finish()


def _press(config: cfg.Config, panel: Panel, prompt: TextIO, style: Style | None = None) -> Check:
    if config.sim["enabled"]:
        return Check("record button", Status.WARN, "mock pins ([sim] enabled): nothing to press")
    text = f"press the record button now ({PRESS_TIMEOUT:g} s)"
    prompt.write((style or Style()).row("....", "record button", text))
    prompt.flush()
    return check_press(panel)


def format_check(check: Check) -> str:
    """A check as text on a pipe: its line, then its hint on the next line (``Style.check`` on a terminal).

    >>> print(format_check(Check("clock", Status.WARN, "not synchronised", "enable NTP")), end="")
    WARN  clock           not synchronised
                          hint: enable NTP
    """
    return Style().check(check)


def _columns(status: str, name: str, detail: str) -> str:
    return f"{status:<4}  {name:<14}  {detail}"


#: On a terminal, the mark before each status word and its colour (SGR: green, yellow, red, dim).
MARKS = {Status.PASS: "✓", Status.WARN: "!", Status.FAIL: "✗", Status.SKIP: "-"}
COLOURS = {Status.PASS: "32", Status.WARN: "33", Status.FAIL: "31", Status.SKIP: "2"}
#: The narrowest detail column kept on a terminal; narrower, continuation lines are indented this much instead.
MIN_DETAIL_COLUMNS = 24
NARROW_INDENT = 4


@dataclass(frozen=True, slots=True)
class Style:
    """How doctor's lines look: plain by default, marked, coloured and wrapped on a terminal (``of``).

    Plain is what a pipe gets: the columns of ``_columns``, one line however long, no control
    characters. ``columns`` wraps each line at word boundaries to that width, continuation lines
    indented to the detail column (on a narrow terminal the detail starts on the next line, indented
    less); a word is never broken. ``marks`` puts a mark before the status word, ``colour`` colours both.

    >>> style = Style(columns=48, marks=True)
    >>> print(style.check(Check("clock", Status.WARN, "not synchronised", "enable systemd-timesyncd")), end="")
    ! WARN  clock           not synchronised
                            hint: enable
                            systemd-timesyncd
    """

    columns: int | None = None
    marks: bool = False
    colour: bool = False

    @classmethod
    def of(cls, stream: TextIO) -> Style:
        """The style for ``stream``: plain unless it is a terminal device; there no colour with NO_COLOR set
        or without a TERM, and neither marks nor colour on TERM=dumb (or when its encoding lacks the marks)."""
        if not _terminal(stream):
            return cls()
        term = os.environ.get("TERM", "")
        try:
            "".join(MARKS.values()).encode(getattr(stream, "encoding", None) or "ascii")
            encodes = True
        except (UnicodeEncodeError, LookupError):
            encodes = False
        marks = term != "dumb" and encodes
        colour = term not in ("", "dumb") and not os.environ.get("NO_COLOR")
        return cls(columns=shutil.get_terminal_size().columns, marks=marks, colour=colour)

    def head(self, status: str, name: str) -> str:
        """What comes before a detail: the status (with a mark's room on a marked terminal) and the name."""
        return ("  " if self.marks else "") + _columns(status, name, "")

    def row(self, status: str, name: str, detail: str, sgr: str = "", mark: str = " ") -> str:
        """One line (wrapped to ``columns``), ``status`` in colour ``sgr`` when there is colour. A detail of
        several lines (a config with more than one problem) is joined with "; "; control characters in it
        (a server's answer, a key's name) are shown as escapes."""
        detail = printable(detail.replace("\n", "; "))
        head = self.head(status, name)
        if self.marks:
            head = mark + head[1:]
        if self.columns is None:
            return head + detail + "\n"
        width = self.columns
        wide = width - len(head) >= MIN_DETAIL_COLUMNS
        pad = " " * (len(head) if wide else NARROW_INDENT)
        lines = _wrap(detail, width, head, pad) if wide else []
        if not lines or len(lines[0]) > width:  # narrow, or the first word does not fit beside the head
            lines = ([head.rstrip()] if head.strip() else []) + _wrap(detail, width, pad, pad)
        # A word longer than the room is not broken: it starts at the left edge, and only one longer than the
        # terminal is wider than it.
        lines = [line if len(line) <= width else line.lstrip() for line in lines] or [head.rstrip()]
        if self.colour and sgr and status.strip():
            shown = f"{mark} {status}" if self.marks else status
            lines[0] = f"\x1b[{sgr}m{shown}\x1b[0m" + lines[0][len(shown) :]
        return "\n".join(lines) + "\n"

    def check(self, check: Check) -> str:
        """A check's line, then its hint (not for a PASS) on the next."""
        sgr, mark = COLOURS[check.status], MARKS[check.status]
        text = self.row(check.status.value, check.name, check.detail, sgr, mark)
        if check.hint and check.status is not Status.PASS:
            text += self.row("", "", "hint: " + check.hint)
        return text

    def paragraph(self, text: str) -> str:
        """A line of its own (the summary), wrapped to ``columns``."""
        if self.columns is None:
            return text + "\n"
        wrapped = textwrap.wrap(text, width=self.columns, break_long_words=False, break_on_hyphens=False)
        return "\n".join(wrapped) + "\n"


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    """``text`` in lines of ``width``, broken between words only: ``first`` before the first, ``rest`` the others."""
    return textwrap.wrap(
        text, width=width, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False
    )


def _terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal device: marks, colour and the width need one (something that only
    says ``isatty()`` has no width to wrap to, and gets the plain lines)."""
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _size(size: float) -> str:
    """
    >>> _size(3 * MB), _size(12.5 * 1024 * MB)
    ('3 MB', '12.5 GB')
    """
    if size >= 1024 * MB:
        return f"{size / 1024 / MB:.1f} GB"
    return f"{size / MB:.0f} MB"
