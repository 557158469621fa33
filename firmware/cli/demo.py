"""``edge-recorder demo``: a short synthetic call recorded by the core.

The call is two tracks at 16 kHz: the front desk answers (outbound), the record
button is pressed (a beep goes into the recording's outbound track), the caller
speaks (inbound) and presses ``#``, which ends the recording where the key's tone
began. The call is written to ``demo-call.wav`` and recorded with the very same
code as ``edge-recorder record``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from ..media.speech import SpeechUnavailable, speak
from ..media.synth import dtmf_tone, mix
from . import exits, record

log = logging.getLogger("edge-recorder.demo")

RATE = 16000
DESK = (0.3, "Front desk, good morning.")
BUTTON_AT = 2.0
CALLER = (2.6, "Hello, I would like to book a table for two on Friday evening, please. My number is on file.")
KEY = "#"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="record a synthetic demo call with the core", description=__doc__)
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("demo-output"),
        help="directory for the call and the recording (default ./demo-output)",
    )
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


def run(args: argparse.Namespace) -> int:
    try:
        call, key_at = synthesize_call()
    except SpeechUnavailable as exc:
        return exits.fail(exits.SOFTWARE, f"{exc}; the README's demo command installs it")
    args.out.mkdir(parents=True, exist_ok=True)
    wav = args.out / "demo-call.wav"
    sf.write(wav, call, RATE, subtype="PCM_16")
    log.info(
        "demo call: %s (%.1f s, left inbound, right outbound); '%s' pressed at %.2f s",
        wav,
        len(call) / RATE,
        KEY,
        key_at,
    )
    log.info("recording from the button press at %.1f s with beep, dual channels, end_on_key '%s'", BUTTON_AT, KEY)
    argv = [
        str(wav),
        "--out",
        str(args.out),
        "--device-id",
        "demo",
        "--at",
        f"{BUTTON_AT}=button",
        "--name",
        "demo",
        "--beep",
        "--channels",
        "dual",
        "--end-on-key",
        KEY,
    ]
    return record.run(record_parser().parse_args(argv))


def record_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-recorder")
    record.add_parser(p.add_subparsers())
    sub = p._subparsers._group_actions[0].choices["record"]
    return sub
