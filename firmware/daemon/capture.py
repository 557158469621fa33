"""The capture thread: the only code that waits on the audio device.

It reads periods from a ``hal`` capture and puts them on a bounded queue that
the daemon's loop drains; it never touches the disk, so a slow card cannot make
it miss a period. The queue holds ``[audio] buffer_seconds`` of audio; should
the loop fall further behind, the oldest audio is dropped and counted as a gap
(the timeline stays true), rather than blocking capture.

An unpaced simulated source (a WAV file fed as fast as possible, ALSA's file
plugin) has no real time to keep up with: with ``lossless`` the thread waits
for room in the queue instead of dropping audio.

A device that vanishes is reopened with capped exponential backoff. The loop is
told ``Lost`` at once and ``Back`` (with the outage in frames, to be filled
with silence) when it returns; the loop decides what happens to recordings
(``reconnect_grace``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hal.audio import Capture, Chunk, DeviceLost, DeviceUnavailable

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


@dataclass(frozen=True, slots=True)
class Lost:
    reason: str
    at: float  # monotonic


@dataclass(frozen=True, slots=True)
class Back:
    outage: float  # seconds
    gap: int  # frames to fill


@dataclass(frozen=True, slots=True)
class Ended:
    """The (file-backed) input has no more audio."""


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


Item = Chunk | Lost | Back | Ended | Failed


class CaptureThread:
    def __init__(
        self,
        capture: Capture,
        buffer_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        lossless: bool = False,
    ) -> None:
        self.capture = capture
        self.lossless = lossless
        periods = max(2, round(buffer_seconds * capture.sample_rate / capture.period_frames))
        self.queue: queue.Queue[Item] = queue.Queue(maxsize=periods)
        self.dropped_frames = 0
        self.reconnects = 0
        self._clock, self._sleep = clock, sleep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _put(self, item: Item) -> None:
        if self.lossless:
            while not self._stop.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    old = self.queue.get_nowait()
                except queue.Empty:
                    continue
                if isinstance(old, Chunk):
                    lost = old.gap + len(old.frames)
                    self.dropped_frames += lost
                    log.warning("storage is behind: dropped %d frames of the oldest audio", lost)
                    # keep the timeline: the next chunk carries the dropped frames as a gap
                    if isinstance(item, Chunk):
                        item = Chunk(item.frames, item.gap + lost)
                else:  # never drop a device message: put it back first
                    self._requeue_front(old)

    def _requeue_front(self, item: Item) -> None:
        with self.queue.mutex:
            self.queue.queue.appendleft(item)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    chunk = self.capture.read()
                except DeviceLost as exc:
                    self._reconnect(str(exc))
                    continue
                if chunk is None:
                    self._put(Ended())
                    return
                self._put(chunk)
        except Exception as exc:  # a bug or an unexpected device error: tell the loop, don't die silently
            log.exception("capture failed")
            self._put(Failed(f"capture failed: {exc}"))

    def _reconnect(self, reason: str) -> None:
        lost_at = self._clock()
        log.error("audio device lost: %s", reason)
        self._put(Lost(reason, lost_at))
        try:
            self.capture.close()
        except Exception:  # the device is gone; closing may fail too
            log.debug("close after loss failed", exc_info=True)
        delay = BACKOFF_FIRST
        while not self._stop.is_set():
            self._sleep(delay)
            try:
                self.capture.open()
            except DeviceUnavailable as exc:
                log.debug("device still unavailable: %s", exc)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            outage = self._clock() - lost_at
            self.reconnects += 1
            log.warning("audio device back after %.1f s", outage)
            self._put(Back(outage, round(outage * self.capture.sample_rate)))
            return
