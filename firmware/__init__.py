"""edge-recorder firmware: the recording core, spool, CLI (and, as they land,
catalog, delivery, control and the daemon)."""

import os

# The core's numpy work is small matrices, one 20 ms period at a time. A BLAS
# thread pool does not speed that up, but its threads spin between calls and
# burn more CPU than the work itself (measured: 1.6 CPU s instead of 0.6 s per
# ten minutes of audio). Set before numpy is first imported; the environment
# can still override it.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

__version__ = "0.1.0"
