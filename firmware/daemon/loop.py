"""The audio loop: capture -> session -> journal, and every control into the session, on one thread.

Theory of operation
-------------------
Two threads. The capture thread (``capture.CaptureThread``) only reads the
device and queues periods. The loop (``AudioLoop.run``) does everything else,
one period at a time: it feeds the period to the recording session
(``firmware.core.Session``), hands the session's events to the journal (spool,
catalog, events), plays tones, and applies controls. Controls from other
threads (GPIO callbacks, the control API that MQTT and HTTP call) are queued
(``submit``, ``call``) and run on the loop between periods, so the session, the
spool and the catalog's recording rows are only ever touched from one thread.
What other threads may read of the loop is its published ``state()``: a
snapshot it replaces after each change, never its live objects.

Audio time is the number of frames fed to the session. Overruns and a device
that comes back within ``[audio] reconnect_grace`` are filled with silence so
audio time stays wall time; after a longer outage active recordings end with
``end_reason = error`` and audio time is re-anchored to the wall clock. The
loop sends the watchdog pings, so a hung loop gets the box restarted.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from hal.audio import Chunk, DeviceUnavailable, level_dbfs
from hal.gpio import LedPattern

from .. import __version__
from ..cloudevents import Timebase
from ..core import (
    ButtonPress,
    CallEnded,
    CallStarted,
    Control,
    EndReason,
    Finished,
    Hook,
    Paused,
    RecordingOptions,
    Rejected,
    Resumed,
    Session,
    Start,
    Started,
    State,
    Stop,
    Tone,
)
from ..journal import Journal
from .capture import Back, CaptureThread, Ended, Failed, Lost
from .hardware import Hardware
from .notify import Notifier

log = logging.getLogger("edge-recorder.loop")

CONTROL_TIMEOUT = 5.0
SPACE_CHECK_SECONDS = 5.0
#: The input level reported for digital silence (whose level is minus infinity, which JSON
#: cannot carry), and for anything quieter: a lone 1 in 0.1 s of zeros at 16 kHz reads about -122 dBFS.
SILENCE_DBFS = -100.0
#: The most audio fed to the session in one call when the loop catches up.
BATCH_SECONDS = 0.5
#: Audio fed to the session at a time at real time, and handed over by the capture thread in one piece
#: (``capture``). The session's cost is mostly per call (the detectors' set-up, the bookkeeping), and the
#: loop's per turn: 80 ms at a time cost about a third of each 20 ms period. Nothing lands later than its
#: sample for it: a control, a running panel timer or a scheduled scenario action has the audio handed over
#: and fed at once, and a key is heard at most this much later.
BLOCK_SECONDS = 0.08
#: The longest the loop waits for audio before a turn of its own (timers, LED, watchdog).
TURN_SECONDS = 0.1
#: How often the state others read is refreshed when nothing changed (the level, free space);
#: a recording's change refreshes it at once.
STATE_SECONDS = 0.25
#: The session's events that change what the state says.
_CHANGES = (Started, Paused, Resumed, Finished)


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """What the loop needs of the config."""

    spool_dir: Path
    min_free_mb: float
    buffer_seconds: float
    reconnect_grace: float
    unpaced: bool = False  # a simulated input fed as fast as it goes: lossless, events in audio time


@dataclass
class _Outage:
    since: float
    reason: str
    ended: bool = False


class AudioLoop:
    """Owns the session and the capture queue; ``run()`` records until ``stop()`` or the end of the input.

    Without ``run()`` (in tests) every ``call`` runs inline, and ``feed`` drives it.
    """

    def __init__(
        self,
        session: Session,
        journal: Journal,
        hardware: Hardware,
        settings: LoopSettings,
        *,
        notifier: Notifier | None = None,
        delivery_status: Callable[[], dict[str, Any]] = dict,
        update_status: Callable[[], dict[str, Any] | None] = lambda: None,
        encryption_problem: str | None = None,
    ) -> None:
        self.session = session
        self.journal = journal
        self.hw = hardware
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.delivery_status = delivery_status
        self.update_status = update_status
        self.encryption_problem = encryption_problem
        self.rate = session.rate
        self.position = 0  # audio time, in frames fed to the session
        self.overruns = 0
        self.problems: dict[str, str] = {}  # standing problems, until fixed: a bad key, a rejected config
        self._error: str | None = None  # what the LED's fast blink is about (clears when it is over)
        self._outage: _Outage | None = None
        self._controls: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._space_checked = 0.0
        self._space_low = False
        self._free_mb: float | None = None
        self._level_db: float | None = None
        self._level_at = 0.0
        self._published: dict[str, Any] = {}
        self._published_at = 0.0
        self.mono_origin = time.monotonic()  # the monotonic clock at audio time 0
        self.capture_thread: CaptureThread | None = None
        #: Called on the loop after each period's controls (the composition root's SIGHUP reload).
        self.between: Callable[[], None] | None = None
        self._refuse_starts()
        self._publish_state()

    # -- any thread ----------------------------------------------------------------------------
    def submit(self, action: Callable[[], Any]) -> Future:
        """Run ``action`` on the loop between periods; its result or error comes back in the future."""
        future: Future = Future()
        self._controls.put((action, future))
        return future

    def claim(self) -> None:
        """This thread is the loop's from now on: calls from others queue, also before ``run`` takes them.

        The composition root claims the loop before it starts delivery, recovery and the API, so that a
        command which arrives while the box is starting waits for the loop instead of running beside it.
        """
        self._thread = threading.current_thread()

    def call(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` on the loop and wait for its answer (inline on the loop itself, or while no thread
        has claimed the loop: in tests)."""
        if self._thread is None or threading.current_thread() is self._thread:
            return action()
        return self.submit(action).result(timeout=CONTROL_TIMEOUT)

    def stop(self) -> None:
        """Ask the loop to return; the caller finishes the recordings (``finish``)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def state(self) -> dict[str, Any]:
        """The device state, with the delivery's figures: on the loop, as it is now; elsewhere, as the loop
        last published it."""
        if self._thread is None or threading.current_thread() is self._thread:
            self._publish_state()
        delivery = self.delivery_status()
        return {
            **self._published,
            "upload_backlog": delivery.get("upload_backlog", 0),
            "delivery": delivery,
            "update": self.update_status(),
        }

    @property
    def trouble(self) -> bool:
        """Something the LED's fast blink is about."""
        return bool(self._error or self._space_low or self.problems or self.journal.problem)

    def seconds(self) -> float:
        return self.position / self.rate

    # -- on the loop (the control API calls these through ``call``) ------------------------------
    def start(self, options: RecordingOptions, source: str) -> str:
        """Start a recording now; its id."""
        self._check_space(force=True)
        events = self.session.send(Start(options, source, call_id=self.session.call_id))
        self._handle(events)
        return next(e for e in events if isinstance(e, Started)).recording.id

    def apply(self, control: Control) -> list:
        """A control for the session, now; the events it made."""
        if isinstance(control, ButtonPress) and not self.session.active:
            self._check_space(force=True)
        events = self.session.send(control)
        self._handle(events)
        return events

    def hook(self, off_hook: bool) -> None:
        self._handle(self.session.send(Hook(off_hook)))

    def active(self) -> list[dict[str, Any]]:
        return list(self._published["recordings"])

    def report(self, code: str, message: str) -> None:
        """A problem that lasts until fixed (a refused config, an unusable key): the LED and the state say so."""
        self.problems[code] = message
        self._publish_state()

    def feed(self, frames: np.ndarray) -> None:
        events = self.session.feed(frames)
        self.position += len(frames)
        self._handle(events)
        if self.hw.scenario is not None:
            self.hw.scenario.advance(self.seconds())
        if self.position / self.rate - self._level_at >= 1.0:  # the input level, once a second
            self._level_at = self.position / self.rate
            self._level_db = level_dbfs(frames[-self.rate // 10 :])

    def finish(self, reason: EndReason) -> None:
        """End every active recording (``shutdown``, ``call_end``, ``error``) and run what is queued."""
        if self.session.active:
            log.info("finishing %d recording(s): %s", len(self.session.active), reason.value)
            self._handle(self.session.close(reason))
        self._run_controls()

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> bool:
        """Record until stopped; True when the simulated input ended (its recordings end ``call_end``)."""
        self.claim()
        self._open_capture()
        if self._stopping.is_set():
            return False
        self.journal.cloud.timebase = Timebase(datetime.now(UTC), self.rate)
        self.mono_origin = time.monotonic()
        capture = CaptureThread(
            self.hw.capture,
            self.settings.buffer_seconds,
            lossless=self.settings.unpaced,
            # at real time, a block per queue item (an unpaced source is gathered by the loop instead)
            block_frames=0 if self.settings.unpaced else round(BLOCK_SECONDS * self.rate),
            urgent=self._urgent,
        )
        self.capture_thread = capture
        capture.start()
        self.notifier.ready(f"recording from {self.hw.describe}")
        self.journal.device_event("device.state", "ready", f"capture open: {self.hw.describe}")
        log.info(
            "ready: %s at %d Hz, %d channel(s); spool %s",
            self.hw.describe,
            self.rate,
            self.session.layout.channels,
            self.settings.spool_dir,
        )
        ended = False
        while not self._stopping.is_set() and not ended:
            try:  # a block comes every BLOCK_SECONDS; a turn without one keeps the timers and the watchdog going
                item = capture.queue.get(timeout=TURN_SECONDS)
            except queue.Empty:
                item = None
            if isinstance(item, Chunk) and not item.gap:
                item = self._feed_batch(item, capture.queue)
            ended = self._take(item) if item is not None else False
            self._tick()  # panel timers first: a press they complete is applied at once below
            if not self._controls.empty():
                self._run_controls()
                self._set_led()  # now, not a block later: the desk sees the press take
            if self.between is not None:
                self.between()
        capture.stop()
        return ended

    def _open_capture(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                self.hw.capture.open()
                return
            except DeviceUnavailable as exc:
                if self._error is None:
                    log.error("waiting for the audio device: %s", exc)
                    self.journal.device_event("device.error", "capture_unavailable", str(exc))
                self._error = "capture unavailable"
                self._set_led()
                self.notifier.status(f"waiting for audio device: {exc}")
                self.notifier.watchdog()
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
        self._error = None

    def _feed_batch(self, first: Chunk, pending: queue.Queue):
        """Feed ``first`` and the pieces queued behind it in one call; return the item that ended the batch.

        At real time the capture thread hands over a block at a time (or a period, when something is to
        land at a sample: ``_urgent``) and this feeds it. When the loop is behind (a slow card, an unpaced
        simulated source) it catches up in pieces of up to ``BATCH_SECONDS``: the session's cost is mostly
        per call. A scheduled scenario action bounds the batch so it lands on time.
        """
        batch, frames = [first.frames], len(first.frames)
        limit = self._batch_limit()
        stopped_by = None
        while frames < limit:
            try:
                nxt = pending.get_nowait()
            except queue.Empty:
                break
            if not isinstance(nxt, Chunk) or nxt.gap:
                stopped_by = nxt
                break
            batch.append(nxt.frames)
            frames += len(nxt.frames)
        self.feed(batch[0] if len(batch) == 1 else np.concatenate(batch))
        return stopped_by

    def _urgent(self, captured: int) -> bool:
        """Whether the capture thread should hand over what it holds now rather than at the end of its block
        (it asks after each period, from its own thread, with the frames captured so far): something is to
        land at a sample, a control, a panel timer or a scenario action, or is to be heard soon: a key is
        down or a key sequence part-way keyed (its last key's end starts a recording and its beep)."""
        if not self._controls.empty() or self.session.keying:
            return True
        panel = self.hw.panel
        if panel is not None and panel.busy:
            return True
        scenario = self.hw.scenario
        return scenario is not None and scenario.next_at is not None and captured >= scenario.next_at * self.rate

    def _batch_limit(self) -> int:
        limit = round(BATCH_SECONDS * self.rate)
        scenario = self.hw.scenario
        if scenario is not None and scenario.next_at is not None:
            limit = min(limit, max(1, round(scenario.next_at * self.rate) - self.position))
        if self.hw.panel is not None and self.hw.panel.busy:
            limit = 1  # a debounce or hold timer is running: keep its ticks fine-grained
        return limit

    def _take(self, item) -> bool:
        """Handle one item from the capture queue; True at the end of a simulated input."""
        channels = self.session.layout.channels
        if isinstance(item, Chunk):
            if item.gap:
                self.overruns += 1
                log.warning("capture gap of %d frames (overrun); filled with silence", item.gap)
                self.journal.device_event(
                    "device.error", "overrun", f"{item.gap} frames lost in capture, filled with silence"
                )
                self.feed(np.zeros((item.gap, channels), np.int16))
            self.feed(item.frames)
        elif isinstance(item, Lost):
            self._outage = _Outage(item.at, item.reason)
            self._error = "audio device lost"
            self.journal.device_event(
                "device.error", "capture_lost", f"audio device lost: {item.reason}; waiting for it"
            )
        elif isinstance(item, Back):
            outage, self._outage = self._outage, None
            self._error = None
            if outage is not None and not outage.ended:
                self.feed(np.zeros((item.gap, channels), np.int16))
                text = f"audio device back after {item.outage:.1f} s; the gap is silence in the recordings"
            else:  # the recordings already ended: restart audio time from the wall clock
                origin = datetime.now(UTC) - timedelta(seconds=self.position / self.rate)
                self.journal.cloud.timebase = Timebase(origin, self.rate)
                text = f"audio device back after {item.outage:.1f} s"
            self.journal.device_event("device.state", "capture_back", text)
        elif isinstance(item, Ended):
            log.info("end of the simulated input at %.2f s", self.seconds())
            return True
        elif isinstance(item, Failed):
            self._error = item.reason
            self.journal.device_event("device.error", "capture_failed", item.reason)
            self._handle(self.session.close(EndReason.ERROR))
            self._stopping.set()
        return False

    def _tick(self) -> None:
        outage = self._outage
        grace = self.settings.reconnect_grace
        if outage is not None and not outage.ended and time.monotonic() - outage.since > grace:
            outage.ended = True
            if self.session.active:
                text = f"audio device gone for more than {grace:g} s: recordings ended"
                log.error(text)
                self.journal.device_event("device.error", "capture_gone", text)
                self._end_all(EndReason.ERROR)
        self._check_space()
        self._set_led()
        if self.hw.panel is not None:
            self.hw.panel.tick()
        self.notifier.watchdog()
        now = time.monotonic()
        if now - self._published_at >= STATE_SECONDS:
            self._publish_state()

    def _run_controls(self) -> None:
        while True:
            try:
                action, future = self._controls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(action())
            except Exception as exc:
                future.set_exception(exc)

    # -- the session's events --------------------------------------------------------------------
    def _handle(self, events: list) -> None:
        if any(isinstance(e, _CHANGES) for e in events):  # the state the journal's reports carry is the new one
            self._publish_state()
        for failed in self.journal.record(events):
            self._error = f"storage: {failed.reason}"
            log.error(
                "storage failed for %s: %s; ending it at the last good sample", failed.recording_id, failed.reason
            )
            self.journal.device_event(
                "device.error", "storage", f"cannot write recording {failed.recording_id}: {failed.reason}"
            )
            if any(r.id == failed.recording_id for r in self.session.active):
                self._handle(self.session.send(Stop(failed.recording_id, EndReason.ERROR)))
        for event in events:
            if isinstance(event, Tone):
                if self.hw.playback is not None:
                    self.hw.playback.play(event.samples)
                if self.hw.panel is not None:
                    self.hw.panel.beep(len(event.samples) / self.rate)
            elif isinstance(event, CallStarted):
                log.info("call %s started at %.2f s", event.call_id, event.at / self.rate)
            elif isinstance(event, CallEnded):
                log.info("call %s ended at %.2f s", event.call_id, event.at / self.rate)
            elif isinstance(event, Rejected):
                log.error("not applied: %s", event.reason)

    def _end_all(self, reason: EndReason) -> None:
        for rec in self.session.active:
            self._handle(self.session.send(Stop(rec.id, reason)))

    # -- what the LED and the state say ------------------------------------------------------------
    def _set_led(self) -> None:
        panel = self.hw.panel
        if panel is None:
            return
        states = [self.session.state_of(r.id) for r in self.session.active]
        if self.trouble:
            pattern = LedPattern.FAST_BLINK
        elif states and all(s is State.PAUSED for s in states):
            pattern = LedPattern.SLOW_BLINK
        elif states:
            pattern = LedPattern.ON
        else:
            pattern = LedPattern.OFF
        panel.set_led(pattern)

    def _publish_state(self) -> None:
        active = [
            {"id": r.id, "name": r.name, "state": (self.session.state_of(r.id) or State.RECORDING).value}
            for r in self.session.active
        ]
        states = {a["state"] for a in active}
        problems = dict(self.problems)
        error = self._error or self.journal.problem or next(iter(problems.values()), None)
        self._published_at = time.monotonic()
        self._published = {
            "state": "recording" if "recording" in states else "paused" if states else "idle",
            "recordings": active,
            "input_level": None if self._level_db is None else round(max(self._level_db, SILENCE_DBFS), 1),
            "free_storage_mb": None if self._free_mb is None else round(self._free_mb),
            "firmware_version": __version__,
            "last_error": error,
            "problems": problems,
        }

    # -- storage space -----------------------------------------------------------------------------
    def _refuse_starts(self) -> None:
        """Tell the session whether recordings may start (it refuses every start, from any source, while not)."""
        if self.encryption_problem:
            reason = f"encryption is on but its key cannot be used ({self.encryption_problem}); not recording"
        elif self._space_low:
            reason = f"storage is full: less than {self.settings.min_free_mb:g} MB free in {self.settings.spool_dir}"
        else:
            reason = None
        self.session.refuse_starts = reason

    def _check_space(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._space_checked < SPACE_CHECK_SECONDS:
            return
        self._space_checked = now
        spool, least = self.settings.spool_dir, self.settings.min_free_mb
        free_mb = shutil.disk_usage(spool).free / 1e6
        self._free_mb = free_mb
        low = free_mb < least
        if low and not self._space_low:
            text = f"storage almost full: {free_mb:.0f} MB free in {spool} (minimum {least:g} MB)"
            log.error(text)
            self.journal.device_event("device.error", "storage_full", text)
            self._end_all(EndReason.ERROR)
        self._space_low = low
        if not low and self.journal.reserve is not None:
            self.journal.reserve.hold()  # given up when the card filled; taken again now there is room
        self._refuse_starts()
