"""What a doctor check reports (``doctor``, ``doctor_loop``): a status, what was found, how to fix it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum

FULL_SCALE_SAMPLE = 32767


class Status(Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"  # nothing to test; does not fail the run


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check: ``hint`` says how to fix a WARN or FAIL.

    >>> Check("clock", Status.WARN, "not synchronised", "enable systemd-timesyncd").as_dict()["status"]
    'WARN'
    """

    name: str
    status: Status
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return {**asdict(self), "status": self.status.value}


def db_text(value: float) -> str:
    return "-inf" if value == -math.inf else f"{value:.1f}"
