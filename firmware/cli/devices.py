"""``edge-recorder devices``: what ALSA offers, to pick ``[audio] capture`` and ``playback``."""

from __future__ import annotations

import argparse
import json
import sys

from hal.audio import Devices, Pcm, list_devices

from . import exits


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "devices",
        help="list ALSA capture and playback PCMs and sound cards",
        description="List the sound cards and the ALSA PCM names that [audio] capture and [audio] playback take "
        "(e.g. plughw:CARD=Device,DEV=0, which converts rate and channels as needed).",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    devices = list_devices()
    if args.json:
        sys.stdout.write(json.dumps(as_dict(devices), indent=2) + "\n")
    else:
        sys.stdout.write(table(devices))
    return exits.OK


def as_dict(devices: Devices) -> dict:
    return {
        "cards": [{"index": index, "id": card_id, "name": name} for index, card_id, name in devices.cards],
        "capture": [{"name": p.name, "description": p.description} for p in devices.capture],
        "playback": [{"name": p.name, "description": p.description} for p in devices.playback],
    }


def table(devices: Devices) -> str:
    """The devices as a readable text table.

    >>> print(table(Devices([Pcm("null", "Discard all samples")], [], [])), end="")
    Sound cards:
      no sound cards found
    <BLANKLINE>
    Capture PCMs ([audio] capture):
      null  Discard all samples
    <BLANKLINE>
    Playback PCMs ([audio] playback):
      none
    """
    lines = ["Sound cards:"]
    if devices.cards:
        lines += [f"  {index:>2}  {card_id:<16}  {name}".rstrip() for index, card_id, name in devices.cards]
    else:
        lines.append("  no sound cards found")
    for title, pcms in (
        ("Capture PCMs ([audio] capture):", devices.capture),
        ("Playback PCMs ([audio] playback):", devices.playback),
    ):
        lines += ["", title, *_pcm_lines(pcms)]
    return "\n".join(lines) + "\n"


def _pcm_lines(pcms: list[Pcm]) -> list[str]:
    if not pcms:
        return ["  none"]
    width = min(max(len(p.name) for p in pcms), 40)
    return [f"  {p.name:<{width}}  {p.description}".rstrip() for p in pcms]
