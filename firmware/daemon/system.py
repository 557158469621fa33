"""Facts about the machine a recording stores: boot id and whether the clock is synchronised."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def clock_synchronized() -> bool:
    """True when the kernel's clock is disciplined (NTP via systemd-timesyncd or chrony).

    ``adjtimex`` with no changes returns the clock state; ``TIME_ERROR`` means
    unsynchronised. Read-only, so it needs no privilege.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(timex)
    except (OSError, AttributeError):
        return False
    return state not in (-1, _TIME_ERROR)
