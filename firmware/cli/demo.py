"""``edge-recorder demo``: a simulated box records a short synthetic call.

The call is two tracks at 16 kHz: the front desk answers (outbound), the record
button is pressed (a beep goes into the recording's outbound track), the caller
speaks (inbound) and presses ``#``, which ends the recording where the key's tone
began. The call is written to ``demo-call.wav`` and heard by the very same
daemon as ``edge-recorder run`` (``--simulate``): WAV capture, mock GPIO pins
with the button pressed at 2 s, the spool and the catalog under ``--out``. The
events are printed as they happen, then the finished recording's catalog row.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from .. import config as cfg
from ..catalog import Catalog
from ..daemon.box import Box
from ..media.speech import SpeechUnavailable, speak
from ..media.synth import dtmf_tone, mix
from . import exits
from .run import event_writer

log = logging.getLogger("edge-recorder.demo")

RATE = 16000
DESK = (0.3, "Front desk, good morning.")
BUTTON_AT = 2.0
CALLER = (2.6, "Hello, I would like to book a table for two on Friday evening, please. My number is on file.")
KEY = "#"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a simulated box records a synthetic demo call", description=__doc__)
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("demo-output"),
        help="directory for the call and the recording (default ./demo-output)",
    )
    p.add_argument("--realtime", action="store_true", help="feed the call at real time (default: as fast as possible)")
    p.set_defaults(run=run)


def synthesize_call() -> tuple[np.ndarray, float]:
    """The demo call as int16 (n, 2) frames, left inbound, right outbound, and the key's time."""
    desk = speak(DESK[1], RATE, voice="en-us+f3")
    caller = speak(CALLER[1], RATE, voice="en-gb", pitch=40)
    key_at = CALLER[0] + len(caller) / RATE + 0.6
    total = int((key_at + 1.0) * RATE)
    call = np.zeros((total, 2), np.int16)
    mix(call, desk, int(DESK[0] * RATE), channel=1)
    mix(call, caller, int(CALLER[0] * RATE), channel=0)
    mix(call, dtmf_tone(KEY, RATE, seconds=0.12), int(key_at * RATE), channel=0)
    noise = np.random.default_rng(7).normal(0, 40, call.shape)
    call = np.clip(call + noise, -32768, 32767).astype(np.int16)
    return call, key_at


def write_demo_call(directory: Path) -> tuple[Path, str]:
    """Write the demo call into ``directory``; return its path and the panel scenario."""
    call, key_at = synthesize_call()
    directory.mkdir(parents=True, exist_ok=True)
    wav = directory / "demo-call.wav"
    sf.write(wav, call, RATE, subtype="PCM_16")
    log.info(
        "demo call: %s (%.1f s, left inbound, right outbound); '%s' pressed at %.2f s",
        wav,
        len(call) / RATE,
        KEY,
        key_at,
    )
    return wav, f"{BUTTON_AT}=button"


def run(args: argparse.Namespace) -> int:
    try:
        wav, scenario = write_demo_call(args.out)
    except SpeechUnavailable as exc:
        return exits.fail(exits.SOFTWARE, f"{exc}; the README's demo command installs it")
    config = cfg.parse(
        {
            "device": {"id": "demo"},
            "audio": {"channels": 2},
            "recording": {"beep": True, "channels": "dual", "end_on_key": KEY, "format": "wav"},
            "spool": {"directory": str(args.out / "spool")},
            "catalog": {"path": str(args.out / "catalog.sqlite3")},
            "sim": {
                "enabled": True,
                "audio": str(wav),
                "scenario": scenario,
                "pace": "realtime" if args.realtime else "fast",
                "playback": str(args.out / "played-tones.wav"),
            },
        },
        "demo",
    )
    log.info("the record button is pressed at %.1f s: beep, dual channels, end_on_key '%s'", BUTTON_AT, KEY)
    box = Box(config, sinks=[event_writer("-")])
    code = box.run()
    catalog = Catalog(Path(config.catalog["path"]))
    rows = [r for r in catalog.list() if r["source"] == "button"]
    catalog.close()
    if not rows:
        return exits.fail(exits.SOFTWARE, "the demo recorded nothing")
    row = rows[0]
    log.info(
        "catalog row of %s: %s",
        row["id"],
        json.dumps({k: row[k] for k in ("status", "end_reason", "key", "duration", "size", "path")}),
    )
    return code
