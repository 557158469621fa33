"""Exit codes (sysexits.h) and the one-line error every command prints."""

from __future__ import annotations

import sys

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
    sys.stderr.write(f"edge-recorder: error: {message}\n")
    return code
