"""Steps the wall clock of a Python process the tests start, as NTP steps a Pi's (it has no real-time
clock): with ``EDGE_RECORDER_TEST_CLOCK`` naming a file, ``time.time()`` and ``time.time_ns()`` are the
real ones plus the seconds the file holds, read again at most every 50 ms; the monotonic clock is left
alone, as the kernel leaves it. Loaded through ``PYTHONPATH`` by tests/test_clock.py only."""

import os
import time

_FILE = os.environ.get("EDGE_RECORDER_TEST_CLOCK")

if _FILE:
    _real_time, _real_time_ns, _monotonic = time.time, time.time_ns, time.monotonic
    _cache = [0.0, -1.0]  # offset, when read

    def _offset() -> float:
        if _monotonic() - _cache[1] > 0.05:
            try:
                with open(_FILE) as fh:
                    _cache[0] = float(fh.read().strip() or 0)
            except (OSError, ValueError):
                pass
            _cache[1] = _monotonic()
        return _cache[0]

    time.time = lambda: _real_time() + _offset()
    time.time_ns = lambda: _real_time_ns() + int(_offset() * 1e9)
