"""The box's hardware from its config: real devices, or their simulated twins.

The only place above ``hal`` that chooses between ``AlsaCapture`` and
``WavCapture``, a real pin factory and gpiozero's mock one. With ``[sim]
enabled`` the panel uses the mock pin factory, its clock is audio time, and a
``Scenario`` drives its pins at the audio times the config gives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hal.audio import AlsaCapture, AlsaPlayback, Capture, FaultyCapture, Playback, WavCapture, WavPlayback, parse_faults
from hal.audio.faults import FaultError
from hal.gpio import Panel, Scenario, parse_scenario
from hal.gpio.scenario import ScenarioError

from .. import config as cfg

log = logging.getLogger("edge-recorder.hardware")


class HardwareError(Exception):
    """The configured hardware cannot be set up; the message says what and why."""


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
        parse_scenario(sim["scenario"])
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
        return WavCapture(
            sim["audio"], a["period_ms"], pace=sim["pace"] == "realtime"
        ), f"simulated capture from {sim['audio']}"
    limit = sim["frames"] if sim["enabled"] and sim["frames"] else None
    capture = AlsaCapture(a["capture"], a["sample_rate"], a["channels"], a["period_ms"], limit_frames=limit)
    return capture, f"ALSA {a['capture']}"


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
