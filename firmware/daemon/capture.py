"""The capture thread: the only code that waits on the audio device.

It reads periods from a ``hal`` capture and puts them on a bounded queue that
the daemon's loop drains; it never touches the disk, so a slow card cannot make
it miss a period. The queue holds ``[audio] buffer_seconds`` of audio; should
the loop fall further behind, the oldest audio is dropped and counted as a gap
(the timeline stays true), rather than blocking capture.

At real time it hands the loop ``block_frames`` at a time (``BLOCK_SECONDS`` of
the loop), several periods in one queue item: the loop then wakes once a block
instead of once a period, which is most of what listening costs. Whenever the
loop has something to land at a sample (``urgent``: a control waiting, a panel
timer running, a scenario action due), each period goes at once instead, so
nothing waits on the block.

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

import numpy as np

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
        block_frames: int = 0,
        urgent: Callable[[int], bool] | None = None,
    ) -> None:
        self.capture = capture
        self.lossless = lossless
        self.block_frames = block_frames  # 0: each period as it comes
        self.urgent = urgent  # given the frames captured so far: whether the loop wants them now
        self.captured = 0
        self._held: list = []  # periods read, not yet queued (block_frames)
        self._held_frames = 0
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
                    self._flush()
                    self._put(Ended())
                    return
                self._deliver(chunk)
        except Exception as exc:  # a bug or an unexpected device error: tell the loop, don't die silently
            log.exception("capture failed")
            self._flush()
            self._put(Failed(f"capture failed: {exc}"))

    def _deliver(self, chunk: Chunk) -> None:
        """Queue ``chunk``, or hold it until a block is full or the loop wants it (see the module)."""
        self.captured += chunk.gap + len(chunk.frames)
        if not self.block_frames or chunk.gap:
            self._flush()
            self._put(chunk)
            return
        self._held.append(chunk.frames)
        self._held_frames += len(chunk.frames)
        if self._held_frames >= self.block_frames or (self.urgent is not None and self.urgent(self.captured)):
            self._flush()

    def _flush(self) -> None:
        held, self._held, self._held_frames = self._held, [], 0
        if held:
            self._put(Chunk(held[0] if len(held) == 1 else np.concatenate(held), 0))

    def _reconnect(self, reason: str) -> None:
        self._flush()  # what was read before the loss goes first
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
