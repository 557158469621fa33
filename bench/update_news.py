"""What the daemon's look at updates costs its audio loop: ``python -m bench.update_news``.

A box that runs from a slot calls ``UpdateNews.poll`` between every two audio periods (13 times a
second with 80 ms blocks); it flushes what the download thread said and, every ``LOOK_SECONDS``,
stats the history, the state file, the note and ``current``, and tries the update lock. The
benchmarks that run the daemon (``bench.realtime``) run it from a checkout, where there is no such
look, so this one measures the look alone on a box laid out as images/install.sh lays it out, at
the loop's pace in audio time (the clock handed to ``poll``), against an empty call in the same
run: figures as microseconds per period and as a share of one core at real time.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from firmware.update.news import UpdateNews
from firmware.update.slots import Layout

PERIODS_PER_SECOND = 12.5  # 80 ms blocks
AUDIO_SECONDS = 3600


def _box(root: Path) -> Layout:
    box = Layout(root)
    for version in ("0.1.0", "0.2.0"):
        info = box.slots / version / "lib/python3.11/site-packages" / f"edge_recorder-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: edge-recorder\nVersion: {version}\n")
    (box.top / "current").symlink_to("slots/0.2.0")
    (box.top / "previous").symlink_to("slots/0.1.0")
    (root / "var/lib/edge-recorder").mkdir(parents=True)
    return box


def _timed(call) -> float:
    periods = int(AUDIO_SECONDS * PERIODS_PER_SECOND)
    start = time.process_time()
    for i in range(periods):
        call(i / PERIODS_PER_SECOND)
    return time.process_time() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        box = _box(Path(folder))
        news = UpdateNews(box, Path(folder) / "var/lib/edge-recorder/update-announced", lambda step: None, "0.2.0")
        baseline = _timed(lambda now: None)
        looked = _timed(lambda now: news.poll(now=now))
    periods = AUDIO_SECONDS * PERIODS_PER_SECOND
    per_period = (looked - baseline) / periods * 1e6
    print(f"update news: {AUDIO_SECONDS} s of audio, {periods:.0f} periods, pid {os.getpid()}")
    print(f"  poll: {per_period:.2f} us per period over an empty call ({looked:.2f} s against {baseline:.2f} s CPU)")
    print(f"  share of one core at real time: {(looked - baseline) / AUDIO_SECONDS * 100:.4f} %")


if __name__ == "__main__":
    main()
