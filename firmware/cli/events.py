"""Where ``run --events`` and ``demo`` write the box's events: one JSON line each, to a file or stdout."""

from __future__ import annotations

import json
import sys


def event_writer(target: str):
    stream = sys.stdout if target == "-" else open(target, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the daemon

    def write(event: dict) -> None:
        stream.write(json.dumps(event, default=str) + "\n")
        stream.flush()

    return write
