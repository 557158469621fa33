"""The box's hardware from its config: real devices, or their simulated twins.

The only place above ``hal`` that chooses between ``AlsaCapture`` and
``WavCapture``, a real pin factory and gpiozero's mock one. With ``[sim]
enabled`` the panel uses the mock pin factory, its clock is audio time, and a
``Scenario`` drives its pins at the audio times the config gives.

The simulated capture serves ``[sim] audio`` at the file's own rate when the
core runs at it (8000 or 16000 Hz). A file at any other rate (a 44.1 or 48 kHz
recording) is converted to ``[audio] sample_rate`` first, by the reader
``edge-recorder record`` uses (``media.source.AudioFile``), into a temporary
file that lives as long as the capture.
"""

from __future__ import annotations

import logging
import math
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from hal.audio import AlsaCapture, AlsaPlayback, Capture, FaultyCapture, Playback, WavCapture, WavPlayback, parse_faults
from hal.audio.faults import FaultError
from hal.gpio import Panel, Scenario, parse_scenario
from hal.gpio.scenario import ScenarioError

from .. import config as cfg
from ..media.source import AudioFile, InputError, Unreadable

log = logging.getLogger("edge-recorder.hardware")


class HardwareError(Exception):
    """The configured hardware cannot be set up; the message says what and why."""


class SimAudioError(HardwareError):
    """``[sim] audio`` cannot be used: ``unreadable`` when it cannot be opened at all (missing, not a file,
    not allowed), else its content cannot be used."""

    def __init__(self, message: str, *, unreadable: bool) -> None:
        super().__init__(message)
        self.unreadable = unreadable


#: What each scenario action drives: the ``[gpio]`` key of the part that must be wired for it.
SCENARIO_PARTS = {"button": "record_button", "button-hold": "record_button", "pause-button": "pause_button"}


@dataclass
class Hardware:
    capture: Capture
    playback: Playback | None = None
    panel: Panel | None = None
    scenario: Scenario | None = None
    describe: str = ""
    problems: list[str] = field(default_factory=list)

    def close(self) -> None:
        for part in (self.capture, self.playback, self.panel):
            if part is None:
                continue
            try:
                part.close()
            except Exception:
                log.debug("closing %r failed", part, exc_info=True)


def check_sim(config: cfg.Config) -> None:
    """The ``[sim]`` scenario and faults read as the simulated hardware will read them: HardwareError naming
    the key and what is wrong (``config check`` and ``run`` say so before anything starts)."""
    sim = config.sim
    try:
        for seconds, action, *off_hook in parse_scenario(sim["scenario"]):
            item = f"{seconds:g}={action}" + (f":{'off' if off_hook[0] else 'on'}" if off_hook else "")
            if not math.isfinite(seconds):
                raise ScenarioError(f"scenario item {item!r}: the time must be a finite number of seconds")
            part = SCENARIO_PARTS.get(action, "hook_switch")
            if config.gpio[part] is None:
                raise ScenarioError(f"scenario item {item!r}: needs [gpio] {part} to be wired (set its pin)")
    except ScenarioError as exc:
        raise HardwareError(f"[sim] scenario = {sim['scenario']!r}: {exc}") from None
    try:
        parse_faults(sim["faults"], config.audio["sample_rate"])
    except FaultError as exc:
        raise HardwareError(f"[sim] faults = {sim['faults']!r}: {exc}") from None


def build(config: cfg.Config, *, audio_seconds: Callable[[], float]) -> Hardware:
    check_sim(config)
    a, sim = config.audio, config.sim
    problems: list[str] = []
    capture, describe = open_capture_for(config)
    if sim["enabled"] and sim["faults"]:
        capture = FaultyCapture(capture, parse_faults(sim["faults"], a["sample_rate"]))
        describe += " (with injected faults)"
    playback: Playback | None = None
    if sim["enabled"] and sim["playback"]:
        playback = WavPlayback(Path(sim["playback"]), a["sample_rate"])
    elif a["playback"]:
        playback = AlsaPlayback(a["playback"], a["sample_rate"])
    if playback is not None:
        try:
            playback.open()
        except Exception as exc:  # tones are optional: record without them
            problems.append(f"playback {a['playback'] or sim['playback']}: {exc}")
            log.error("playback unavailable, tones are not played: %s", exc)
            playback = None
    panel, scenario = _panel(config, audio_seconds, problems)
    return Hardware(capture, playback, panel, scenario, describe, problems)


def open_capture_for(config: cfg.Config) -> tuple[Capture, str]:
    """The capture the config asks for (not yet opened) and a few words naming it."""
    a, sim = config.audio, config.sim
    if sim["enabled"] and sim["capture"] == "wav":
        if not sim["audio"]:
            raise HardwareError("[sim] audio: no WAV file given (edge-recorder run --simulate makes a demo call)")
        return _wav_capture(Path(sim["audio"]), a["sample_rate"], a["period_ms"], pace=sim["pace"] == "realtime")
    limit = sim["frames"] if sim["enabled"] and sim["frames"] else None
    capture = AlsaCapture(a["capture"], a["sample_rate"], a["channels"], a["period_ms"], limit_frames=limit)
    return capture, f"ALSA {a['capture']}"


def _wav_capture(path: Path, rate: int, period_ms: int, *, pace: bool) -> tuple[WavCapture, str]:
    """The simulated capture of ``path``, converted to ``rate`` first when the core does not run at its rate."""
    try:
        source = AudioFile(path, convert_to=rate)
    except Unreadable as exc:
        raise SimAudioError(f"[sim] audio: {exc}", unreadable=True) from None
    except InputError as exc:
        raise SimAudioError(f"[sim] audio: {exc}", unreadable=False) from None
    with source:
        if source.rate == source.file_rate:
            return WavCapture(path, period_ms, pace=pace), f"simulated capture from {path}"
        converted = tempfile.NamedTemporaryFile(prefix="edge-recorder-sim-", suffix=".wav")  # noqa: SIM115 - the capture's
        try:
            with sf.SoundFile(converted.name, "w", source.rate, source.channels, "PCM_16", format="WAV") as out:
                for piece in source.pieces():
                    out.write(piece)
        except InputError as exc:
            converted.close()
            raise SimAudioError(f"[sim] audio: {exc}", unreadable=False) from None
    log.info(
        "[sim] audio %s is %d Hz: the simulated capture serves it converted to %d Hz", path, source.file_rate, rate
    )
    capture = WavCapture(converted.name, period_ms, pace=pace)
    weakref.finalize(capture, converted.close)  # the converted file goes with the capture (or at exit)
    return capture, f"simulated capture from {path} ({source.file_rate} Hz, converted)"


def _panel(config: cfg.Config, audio_seconds, problems: list[str]) -> tuple[Panel | None, Scenario | None]:
    g, sim = config.gpio, config.sim
    if not g["enabled"] and not sim["enabled"]:
        return None, None
    factory = "mock" if sim["enabled"] else g["pin_factory"] or None
    try:
        panel = Panel(
            record_button=g["record_button"],
            pause_button=g["pause_button"],
            hook_switch=g["hook_switch"],
            hook_off_hook_contact=g["hook_off_hook"],
            led=g["led"],
            buzzer=g["buzzer"],
            pin_factory=factory,
            bounce_s=g["bounce_ms"] / 1000,
            hook_bounce_s=g["hook_bounce_ms"] / 1000,
            hold_s=g["hold_seconds"] or None,
            active_high=g["active_high"],
            **({"clock": audio_seconds} if sim["enabled"] else {}),
        )
    except Exception as exc:  # gpiozero raises several kinds when there is no GPIO at all
        text = f"GPIO panel unavailable ({exc}); set [gpio] enabled = false on a box without buttons"
        problems.append(text)
        log.error(text)
        return None, None
    scenario = Scenario(panel, parse_scenario(sim["scenario"])) if sim["enabled"] and sim["scenario"] else None
    return panel, scenario
