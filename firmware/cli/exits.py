"""Exit codes (sysexits.h) and the one-line error every command prints."""

from __future__ import annotations

import sys

from ..findings import printable

OK = 0
USAGE = 64
DATAERR = 65
NOINPUT = 66
UNAVAILABLE = 69
SOFTWARE = 70
CANTCREAT = 73
NOPERM = 77
CONFIG = 78


def fail(code: int, message: str) -> int:
    """Say ``message`` (each of its lines as an error line, control characters as escapes) and give back ``code``."""
    for line in message.split("\n"):
        sys.stderr.write(f"edge-recorder: error: {printable(line)}\n")
    return code
