"""``edge-recorder run``: the appliance daemon.

With ``--simulate`` the whole box runs on simulated hardware: capture from a
WAV file (a built-in demo call when none is given; any rate, converted to
``[audio] sample_rate`` when the core does not run at the file's), gpiozero's
mock pins driven by a scenario keyed to audio time, and state in a local
directory.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .. import config as cfg
from ..daemon.app import Box
from ..daemon.hardware import HardwareError, SimAudioError, check_sim
from . import exits
from .events import event_writer

log = logging.getLogger("edge-recorder.run")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the recording daemon", description=__doc__)
    add_config_argument(p)
    p.add_argument("--simulate", action="store_true", help="simulated hardware: WAV capture, mock GPIO ([sim] config)")
    p.add_argument(
        "--audio",
        type=Path,
        help="with --simulate: the WAV file the box hears, at any rate (default: a demo call)",
    )
    p.add_argument(
        "--scenario",
        help='with --simulate: panel actions, e.g. "2=button, 9.5=button" (button, button-hold, pause-button, '
        "hook:off, hook:on)",
    )
    p.add_argument("--fast", action="store_true", help="with --simulate: feed the audio as fast as possible")
    p.add_argument("--state-dir", type=Path, help="put the spool and the catalog here (default: from the config)")
    p.add_argument("--events", metavar="FILE", help="also write every event as a JSON line to FILE ('-' for stdout)")
    p.set_defaults(run=run)


def add_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        help=f"config file (default ${cfg.ENV_VAR} or {cfg.DEFAULT_PATH}; absent: every key's default)",
    )


def load(args: argparse.Namespace) -> cfg.Config:
    config = cfg.load(args.config)
    changes: dict[str, dict] = {}
    if getattr(args, "state_dir", None):
        changes["spool"] = {"directory": str(args.state_dir / "spool")}
        changes["catalog"] = {"path": str(args.state_dir / "catalog.sqlite3")}
    if getattr(args, "simulate", False):
        sim = {"enabled": True}
        if args.audio:
            sim["audio"] = str(args.audio)
        if args.scenario is not None:
            sim["scenario"] = args.scenario
        if args.fast:
            sim["pace"] = "fast"
        changes["sim"] = sim
    return config.replace(**changes) if changes else config


def log_event(event: dict) -> None:
    data = event.get("data", {})
    log.info("event %s %s", event["type"], data.get("id") or data.get("code") or data.get("key") or "")


#: The daemon's own file mode mask: recordings, the catalog and the cache are the box's and its group's
#: only, however it was started (systemd sets the same; a shell's 022 would make them world-readable).
UMASK = 0o027


def run(args: argparse.Namespace) -> int:
    os.umask(UMASK)
    try:
        config = load(args)
    except cfg.ConfigError as exc:
        return exits.fail(exits.CONFIG, str(exc))
    try:
        check_sim(config)  # before a demo call is written or a part opened
    except HardwareError as exc:
        return exits.fail(exits.CONFIG, str(exc))
    if config.sim["enabled"] and config.sim["capture"] == "wav" and not config.sim["audio"]:
        from .demo import write_demo_call

        state = Path(config.spool["directory"]).parent
        wav, scenario = write_demo_call(state)
        config = config.replace(sim={"audio": str(wav), "scenario": config.sim["scenario"] or scenario})
    sinks = [log_event]
    if args.events:
        try:
            sinks.append(event_writer(args.events))
        except PermissionError:
            raise  # main names the user who may
        except OSError as exc:
            return exits.fail(exits.CANTCREAT, f"--events {args.events}: {exc.strerror}")
    try:
        box = Box(config, sinks=sinks, config_path=args.config)
    except SimAudioError as exc:
        return exits.fail(exits.NOINPUT if exc.unreadable else exits.DATAERR, str(exc))
    except HardwareError as exc:
        return exits.fail(exits.CONFIG, str(exc))
    except PermissionError:
        raise  # main names the user who may
    except OSError as exc:
        return exits.fail(exits.CANTCREAT, f"{exc.filename or ''}: {exc.strerror}")
    return box.run()
