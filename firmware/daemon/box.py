"""The box: capture -> core -> spool -> catalog -> events, and every control into the core.

Theory of operation
-------------------
Two threads. The capture thread (``capture.CaptureThread``) only reads the
device and queues periods. The loop (``Box.run``, the main thread) does
everything else, one period at a time: it feeds the period to the core, hands
the core's events to the spool (part files), the catalog and the event sinks,
plays tones, follows calls, and applies controls. Controls from other threads
(GPIO callbacks, the control API that MQTT and HTTP call) are queued and run
on the loop between periods, so the core, the spool and the catalog are only
ever touched from one thread.

Audio time is the number of frames fed to the core. Overruns and a device that
comes back within ``[audio] reconnect_grace`` are filled with silence so audio
time stays wall time; after a longer outage active recordings end with
``end_reason = error`` and audio time is re-anchored to the wall clock.

At start, part files a crash left behind are repaired and finalised
(``end_reason = recovered``) and catalog and spool are reconciled
(``recovery``). The service is READY for systemd once capture is open; the
loop sends the watchdog pings, so a hung loop gets the box restarted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hal.audio import Chunk, DeviceUnavailable, level_dbfs
from hal.gpio import LedPattern

from .. import __version__
from .. import config as cfg
from ..catalog import open_catalog
from ..cloudevents import CloudEvents, Timebase, rfc3339
from ..control import Control
from ..core import (
    Audio,
    ButtonPress,
    CallEnded,
    CallStarted,
    EndReason,
    Finished,
    Hook,
    InputLayout,
    Key,
    Paused,
    RecordingOptions,
    Rejected,
    Resumed,
    Session,
    Start,
    Started,
    State,
    Status,
    Stop,
    Tone,
)
from ..core.lifecycle import finished_event_type
from ..delivery.commands import Commands
from ..delivery.service import Delivery
from ..journal import delete_recording, public
from ..media.partfile import write_atomic
from ..spool import Take, Takes, WriteFailed
from . import recovery
from .capture import Back, CaptureThread, Ended, Failed, Lost
from .hardware import Hardware, build
from .notify import Notifier
from .system import boot_id, clock_synchronized

log = logging.getLogger("edge-recorder.box")

CONTROL_TIMEOUT = 5.0
SPACE_CHECK_SECONDS = 5.0
#: The input level reported for digital silence (whose level is minus infinity, which JSON
#: cannot carry), and for anything quieter: a lone 1 in 0.1 s of zeros at 16 kHz reads about -122 dBFS.
SILENCE_DBFS = -100.0
#: The most audio fed to the core in one call when the loop catches up.
BATCH_SECONDS = 0.5
STATE_FIELDS = ("id", "name", "call_id", "source", "status", "state", "format", "sample_rate", "channels", "track")


@dataclass
class _Outage:
    since: float
    reason: str
    ended: bool = False


class Box:
    """The daemon. ``Box(config).run()`` runs until SIGTERM (or the end of a simulated input)."""

    def __init__(
        self,
        config: cfg.Config,
        *,
        hardware: Hardware | None = None,
        sinks: list[Callable[[dict[str, Any]], None]] | None = None,
        notifier: Notifier | None = None,
        config_path: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.device_id = config.device_id
        self.sinks = list(sinks or [])
        self._sink_lock = threading.Lock()
        self.notifier = notifier or Notifier()
        a = config.audio
        self.position = 0  # audio time, in frames fed to the core
        self.hw = hardware or build(config, audio_seconds=self.audio_seconds)
        # the capture decides the input's shape (a simulated WAV brings its own)
        self.rate = self.hw.capture.sample_rate
        self.layout = InputLayout(self.rate, self.hw.capture.channels, a["inbound_channel"], a["outbound_channel"])
        self.core = Session(self.layout, options=config.recording)
        self.spool_dir = Path(config.spool["directory"])
        self.encrypt_to, self.encryption_problem = _recipient(config)
        self.takes = Takes(
            self.spool_dir,
            self.rate,
            file_names="id",
            sync_seconds=config.spool["fsync_interval"],
            encrypt_to=self.encrypt_to,
        )
        self.catalog, self.catalog_moved = open_catalog(Path(config.catalog["path"]))
        self.cloud = CloudEvents(self.device_id, Timebase(datetime.now(UTC), self.rate))
        self.mono_origin = time.monotonic()
        self.boot_id = boot_id()
        self.clock_synced = clock_synchronized()
        self._controls: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()
        self._stopping = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._reload = threading.Event()
        self._error: str | None = None  # what the LED's fast blink is about (clears when it is over)
        self._standing: dict[str, str] = {}  # problems that last until fixed: a bad key, a rejected config
        self._outage: _Outage | None = None
        self._started_rows: dict[str, dict[str, Any]] = {}  # fields at the start, should the catalog fail
        self._catalog_failed = False
        self._space_checked = 0.0
        self._space_low = False
        self.overruns = 0
        sim = config.sim
        self._unpaced = sim["enabled"] and (sim["capture"] == "alsa" or sim["pace"] == "fast")
        self._level_db: float | None = None
        self._level_at = 0.0
        self._free_mb: float | None = None
        self.delivery = Delivery(
            config,
            self.catalog,
            device_id=self.device_id,
            envelope=self._envelope_now,
            public=self.public_row,
            snapshot=self.snapshot,
            commands=Commands(Control(self), token=config.mqtt["command_token"], public=self.public_row),
            clock_synced=clock_synchronized,
            free_bytes=lambda: shutil.disk_usage(self.spool_dir).free,
            notify=self._publish,
        )
        self.api = None
        if config.http["listen"]:
            from ..api.server import ApiServer

            self.api = ApiServer(self)
        self._apply_settings(config)
        self._refuse_starts()
        self._wire_panel()

    # -- settings that SIGHUP can change ------------------------------------------------
    def _apply_settings(self, config: cfg.Config) -> None:
        self.config = config
        wired = self.hw.panel is not None and config.gpio["hook_switch"] is not None
        self.core.configure(config.recording, config.session_rules(hook_switch=wired))
        logging.getLogger().setLevel(config.log["level"].upper())

    def reload(self) -> None:
        """Re-read the config; apply what is safe while running, name the rest."""
        try:
            new = cfg.load(self.config_path)
        except cfg.ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        fixed = [
            f"[{s}]"
            for s in cfg.SCHEMA
            if s not in cfg.RELOADABLE_SECTIONS and getattr(new, s) != getattr(self.config, s)
        ]
        if fixed:
            log.warning("reload: %s change only at restart", ", ".join(fixed))
            new = self.config.replace(**{s: new.raw.get(s, {}) for s in cfg.RELOADABLE_SECTIONS})
        changed = [name for name in cfg.RELOADABLE_SECTIONS if getattr(new, name) != getattr(self.config, name)]
        self._apply_settings(new)
        log.info("config reloaded from %s", new.source)
        self._catalog("audit", "config_reload", "sighup", new.source, ", ".join(changed) or "no change")

    # -- time ---------------------------------------------------------------------------
    def audio_seconds(self) -> float:
        return self.position / self.rate

    # -- controls (any thread) -----------------------------------------------------------
    def submit(self, action: Callable[[], Any]) -> Future:
        """Run ``action`` on the loop between periods; its result or error comes back in the future."""
        future: Future = Future()
        self._controls.put((action, future))
        return future

    def call(self, action: Callable[[], Any]) -> Any:
        if self._loop_thread is None or threading.current_thread() is self._loop_thread:
            return action()  # on the loop itself, or before it runs
        return self.submit(action).result(timeout=CONTROL_TIMEOUT)

    def stop(self) -> None:
        """Ask the loop to finish active recordings (``shutdown``) and return."""
        self._stopping.set()

    # -- controls (loop thread) ------------------------------------------------------------
    def _report_provisioning(self) -> None:
        """A config file on the boot partition that first-boot provisioning refused: say so until fixed."""
        from ..provision import MARKER, read_marker

        # the state directory holds the spool; on a box it is /var/lib/edge-recorder, where provisioning writes
        problem = read_marker(self.spool_dir.parent / MARKER.name)
        if problem is None:
            return
        self._standing[problem["code"]] = problem["message"]
        applied = problem.get("code") == "provision_left_secrets"  # the new config is in use, its copy stayed
        log.error(
            "provisioning: %s (%s)",
            problem["message"],
            "config applied" if applied else "running on the previous config",
        )
        self._device_event("device.error", problem["code"], problem["message"])

    def _refuse_starts(self) -> None:
        """Tell the core whether recordings may start (it refuses every start, from any source, while not)."""
        if self.encryption_problem:
            reason = f"encryption is on but its key cannot be used ({self.encryption_problem}); not recording"
        elif self._space_low:
            reason = f"storage is full: less than {self.config.spool['min_free_mb']} MB free in {self.spool_dir}"
        else:
            reason = None
        self.core.refuse_starts = reason

    def start_recording(self, options: RecordingOptions, source: str) -> dict[str, Any]:
        self._check_space(force=True)
        events = self.core.send(Start(options, source, call_id=self.core.call_id))
        self._handle(events)
        started = next(e for e in events if isinstance(e, Started))
        return self._catalog("get", started.recording.id) or {}

    def control(self, control) -> list:
        if isinstance(control, ButtonPress) and not self.core.active:
            self._check_space(force=True)
        events = self.core.send(control)
        self._handle(events)
        return events

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        self._loop_thread = threading.current_thread()
        self._install_signals()
        self.delivery.start()
        if self.encryption_problem:
            self._standing["encryption_key"] = self.encryption_problem
            log.error("encryption is on but its key cannot be used: %s; recording is refused", self.encryption_problem)
            self._device_event(
                "device.error",
                "encryption_key",
                f"[encryption] public_key: {self.encryption_problem}; recording is refused",
            )
        self._report_provisioning()
        for row in recovery.recover(self):
            self._emit(self._envelope_now(finished_event_type(row.get("state")), self.public_row(row)), row)
        self._open_capture()
        if self._stopping.is_set():
            return self._shutdown()
        self.cloud.timebase = Timebase(datetime.now(UTC), self.rate)
        self.mono_origin = time.monotonic()
        capture = CaptureThread(self.hw.capture, self.config.audio["buffer_seconds"], lossless=self._unpaced)
        self.capture_thread = capture
        capture.start()
        if self.api is not None:
            try:
                self.api.start()
            except OSError as exc:  # the box records without its API rather than not at all
                log.error("HTTP API not started on %s: %s", self.config.http["listen"], exc)
                self._device_event("device.error", "api", f"HTTP API not started: {exc}")
                self.api = None
        self.notifier.ready(f"recording from {self.hw.describe}")
        self._device_event("device.state", "ready", f"capture open: {self.hw.describe}")
        log.info(
            "ready: %s at %d Hz, %d channel(s); spool %s",
            self.hw.describe,
            self.rate,
            self.layout.channels,
            self.spool_dir,
        )
        ended = False
        while not self._stopping.is_set() and not ended:
            try:
                item = capture.queue.get(timeout=0.05)
            except queue.Empty:
                item = None
            if isinstance(item, Chunk) and not item.gap:
                item = self._feed_batch(item, capture.queue)
            ended = self._take(item) if item is not None else False
            self._tick()  # panel timers first: a press they complete is applied at once below
            self._run_controls()
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
        capture.stop()
        if ended:
            self._handle(self.core.close(EndReason.CALL_END))
        return self._shutdown()

    def _open_capture(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                self.hw.capture.open()
                return
            except DeviceUnavailable as exc:
                if self._error is None:
                    log.error("waiting for the audio device: %s", exc)
                    self._device_event("device.error", "capture_unavailable", str(exc))
                self._error = "capture unavailable"
                self._set_led()
                self.notifier.status(f"waiting for audio device: {exc}")
                self.notifier.watchdog()
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
        self._error = None

    def _feed_batch(self, first: Chunk, pending: queue.Queue):
        """Feed ``first`` and the periods queued behind it in one piece; return the item that ended the batch.

        At real time the queue holds one period and this feeds one period. When
        the loop is behind (a slow card, an unpaced simulated source) it catches
        up in pieces of up to ``BATCH_SECONDS``: the core's cost is mostly per
        call. A scheduled scenario action bounds the batch so it lands on time.
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
        self._feed(batch[0] if len(batch) == 1 else np.concatenate(batch))
        return stopped_by

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
        if isinstance(item, Chunk):
            if item.gap:
                self.overruns += 1
                log.warning("capture gap of %d frames (overrun); filled with silence", item.gap)
                self._device_event("device.error", "overrun", f"{item.gap} frames lost in capture, filled with silence")
                self._feed(np.zeros((item.gap, self.layout.channels), np.int16))
            self._feed(item.frames)
        elif isinstance(item, Lost):
            self._outage = _Outage(item.at, item.reason)
            self._error = "audio device lost"
            self._device_event("device.error", "capture_lost", f"audio device lost: {item.reason}; waiting for it")
        elif isinstance(item, Back):
            outage, self._outage = self._outage, None
            self._error = None
            if outage is not None and not outage.ended:
                self._feed(np.zeros((item.gap, self.layout.channels), np.int16))
                text = f"audio device back after {item.outage:.1f} s; the gap is silence in the recordings"
            else:  # the recordings already ended: restart audio time from the wall clock
                self.cloud.timebase = Timebase(datetime.now(UTC) - _seconds(self.position / self.rate), self.rate)
                text = f"audio device back after {item.outage:.1f} s"
            self._device_event("device.state", "capture_back", text)
        elif isinstance(item, Ended):
            log.info("end of the simulated input at %.2f s", self.audio_seconds())
            return True
        elif isinstance(item, Failed):
            self._error = item.reason
            self._device_event("device.error", "capture_failed", item.reason)
            self._handle(self.core.close(EndReason.ERROR))
            self._stopping.set()
        return False

    def _feed(self, frames: np.ndarray) -> None:
        events = self.core.feed(frames)
        self.position += len(frames)
        self._handle(events)
        if self.hw.scenario is not None:
            self.hw.scenario.advance(self.audio_seconds())
        if self.position / self.rate - self._level_at >= 1.0:  # the input level, once a second
            self._level_at = self.position / self.rate
            self._level_db = level_dbfs(frames[-self.rate // 10 :])

    def _tick(self) -> None:
        outage = self._outage
        if (
            outage is not None
            and not outage.ended
            and time.monotonic() - outage.since > self.config.audio["reconnect_grace"]
        ):
            outage.ended = True
            if self.core.active:
                text = f"audio device gone for more than {self.config.audio['reconnect_grace']:g} s: recordings ended"
                log.error(text)
                self._device_event("device.error", "capture_gone", text)
                for rec in self.core.active:
                    self._handle(self.core.send(Stop(rec.id, EndReason.ERROR)))
        self._check_space()
        self._set_led()
        if self.hw.panel is not None:
            self.hw.panel.tick()
        self.notifier.watchdog()

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

    # -- core events -------------------------------------------------------------------
    def _handle(self, events: list) -> None:
        for event in events:
            try:
                take = self.takes.handle(event)
            except WriteFailed as exc:
                self._storage_failed(exc)
                take = None
            if isinstance(event, Started):
                self._started(event)
            elif isinstance(event, Finished) and take is not None:
                self._finished(take)
            elif isinstance(event, Paused | Resumed):
                row = self._started_rows.get(event.recording.id)
                self._emit(self.cloud.of(event), row, update={"status": event.status.value, "state": event.state.value})
            elif isinstance(event, Key):
                self._emit(self.cloud.of(event))
            elif isinstance(event, CallStarted):
                log.info("call %s started at %.2f s", event.call_id, event.at / self.rate)
            elif isinstance(event, CallEnded):
                log.info("call %s ended at %.2f s", event.call_id, event.at / self.rate)
            elif isinstance(event, Tone):
                if self.hw.playback is not None:
                    self.hw.playback.play(event.samples)
                if self.hw.panel is not None:
                    self.hw.panel.beep(len(event.samples) / self.rate)
            elif isinstance(event, Rejected):
                log.error("not applied: %s", event.reason)
            elif isinstance(event, Audio):
                pass

    def _started(self, event: Started) -> None:
        rec = event.recording
        data = self.cloud.recording_fields(rec, "recording", "in-progress")
        row = {
            **data,
            "options": rec.options.to_dict(),
            "start_monotonic": self.mono_origin + rec.first / self.rate,
            "clock_synced": self.clock_synced,
            "boot_id": self.boot_id,
            "input_rate": self.rate,
        }
        self._sidecar(self.spool_dir / f".{rec.id}.part.json", row)
        row.pop("input_rate")
        self._started_rows[rec.id] = row
        self._emit(self.cloud.of(event), row, insert=row)
        log.info("started %s (%s, %s)", rec.id, rec.source, rec.options.channels.value)

    def _finished(self, take: Take) -> None:
        done = take.finished
        rec = done.recording
        data = self.cloud.finished(take)["data"]
        if take.written is None and take.error is None:
            data["status"] = Status.ABSENT.value
        if take.error:
            data.update(error_code="storage", error_message=take.error)
            if take.written is not None:  # what reached the card, not what the core counted
                rate = self.rate if take.encryption else rec.options.sample_rate
                data["duration"] = round(take.written.frames / rate, 4)
        row = {
            k: data.get(k)
            for k in (
                "status",
                "state",
                "end_reason",
                "key",
                "end_time",
                "duration",
                "size",
                "sha256",
                "error_code",
                "error_message",
            )
        }
        row["path"] = str(take.written.path) if take.written else None
        row["encryption"] = take.encryption
        data["encryption"] = take.encryption
        started = self._started_rows.pop(rec.id, None) or self._catalog("get", rec.id) or {}
        full = {**started, **{k: v for k, v in data.items() if k in started}, **row}
        event = self.cloud.envelope(finished_event_type(full.get("state")), done.at, self.public_row(full))
        self._emit(event, full, update=row)
        full = self._catalog("get", rec.id) or full
        if take.written is not None:
            self._sidecar(take.written.path.with_suffix(".json"), full)
        (self.spool_dir / f".{rec.id}.part.json").unlink(missing_ok=True)
        log.info(
            "finished %s: %s, %s, %.2f s%s",
            rec.id,
            full["status"],
            full["end_reason"],
            full["duration"] or 0,
            f" -> {full['path']}" if full["path"] else "",
        )

    def _catalog(self, operation: str, *args, **fields) -> Any:
        """A catalog call that cannot stop the recording: on a database error, say so and go on.

        The spool's ``.json`` files keep every recording's fields, so the next
        start rebuilds what the catalog lost.
        """
        try:
            return getattr(self.catalog, operation)(*args, **fields)
        except sqlite3.Error as exc:
            if not self._catalog_failed:
                self._catalog_failed = True
                self._error = f"catalog: {exc}"
                log.error("catalog %s failed (%s); recording goes on, the spool keeps the fields", operation, exc)
                self._device_event("device.error", "catalog", f"the catalog cannot be written: {exc}")
            return None

    def _sidecar(self, path: Path, row: dict[str, Any]) -> None:
        """A recording's fields beside its audio, to rebuild a lost catalog; the catalog itself does not need it."""
        try:
            write_atomic(path, json.dumps(row).encode())
        except OSError as exc:
            log.warning("%s not written (%s); the catalog still has the recording", path.name, exc.strerror)

    def _storage_failed(self, exc: WriteFailed) -> None:
        self._error = f"storage: {exc.reason}"
        log.error("storage failed for %s: %s; ending it at the last good sample", exc.recording_id, exc.reason)
        self._device_event("device.error", "storage", f"cannot write recording {exc.recording_id}: {exc.reason}")
        if any(r.id == exc.recording_id for r in self.core.active):
            self._handle(self.core.send(Stop(exc.recording_id, EndReason.ERROR)))

    # -- panel ---------------------------------------------------------------------------
    def _wire_panel(self) -> None:
        """The panel's buttons and hook switch go through the control API like every front end."""
        panel = self.hw.panel
        if panel is None:
            return
        control = Control(self)

        def later(action: Callable[..., Any]) -> Callable[..., None]:
            # gpiozero calls from its own thread: queue the action, never block that thread
            def callback(*args) -> None:
                self.submit(lambda: action(*args)).add_done_callback(_log_failure)

            return callback

        panel.on_record = later(control.button)
        panel.on_pause = later(control.pause_button)
        if self.config.gpio["pause_button"] is None:
            panel.on_record_hold = later(control.pause_button)
        panel.on_hook = later(control.hook)

    def hook(self, off_hook: bool) -> None:
        self._handle(self.core.send(Hook(off_hook)))

    def _set_led(self) -> None:
        panel = self.hw.panel
        if panel is None:
            return
        states = [self.core.state_of(r.id) for r in self.core.active]
        if self._error or self._space_low or self._standing:
            pattern = LedPattern.FAST_BLINK
        elif states and all(s is State.PAUSED for s in states):
            pattern = LedPattern.SLOW_BLINK
        elif states:
            pattern = LedPattern.ON
        else:
            pattern = LedPattern.OFF
        panel.set_led(pattern)

    # -- storage space -------------------------------------------------------------------
    def _check_space(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._space_checked < SPACE_CHECK_SECONDS:
            return
        self._space_checked = now
        free_mb = shutil.disk_usage(self.spool_dir).free / 1e6
        self._free_mb = free_mb
        low = free_mb < self.config.spool["min_free_mb"]
        if low and not self._space_low:
            text = f"storage almost full: {free_mb:.0f} MB free in {self.spool_dir} (minimum {self.config.spool['min_free_mb']} MB)"
            log.error(text)
            self._device_event("device.error", "storage_full", text)
            for rec in self.core.active:
                self._handle(self.core.send(Stop(rec.id, EndReason.ERROR)))
        self._space_low = low
        self._refuse_starts()

    # -- events --------------------------------------------------------------------------
    def _emit(
        self,
        event: dict[str, Any] | None,
        row: dict[str, Any] | None = None,
        *,
        insert: dict[str, Any] | None = None,
        update: dict[str, Any] | None = None,
    ) -> None:
        """Record a change and the deliveries that report it in one transaction, then tell the local sinks.

        ``insert`` adds the recording ``row``; ``update`` changes its fields;
        with neither, the event only goes to the outbox.
        """
        if event is None:
            return
        items = self.delivery.items(event, row)
        if insert is not None:
            self._catalog("insert", insert, outbox=items)
        elif update is not None:
            self._catalog("update", row["id"] if row else event["data"]["id"], outbox=items, **update)
        elif items:
            self._catalog("enqueue", items)
        self.delivery.wake()
        if event["type"].startswith("recording."):
            self.delivery.state_changed()
        self._publish(event)

    def _envelope_now(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """An event about something that happened now (not at an audio position).

        A simulated box fed faster than real time lives in audio time, so its
        events keep their order; a real one stamps the wall clock.
        """
        event = self.cloud.envelope(kind, self.position, data)
        if not self._unpaced:
            event["time"] = rfc3339(datetime.now(UTC))
        return event

    def public_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A catalog row as SPEC section 3's fields, with its uploads and a signed media link."""
        uploads = None
        if row.get("id"):
            with contextlib.suppress(sqlite3.Error):  # a failing catalog must not stop an event
                uploads = self.catalog.uploads(row["id"])
        return public(row, self.api.media_url(row) if self.api is not None else None, uploads)

    def delete_recording(self, recording_id: str, *, force: bool = False, actor: str = "?") -> dict[str, Any]:
        """Soft delete (``journal.delete_recording``): the media go, the metadata stay (status ``deleted``)."""
        row, event = delete_recording(
            self.catalog,
            recording_id,
            actor=actor,
            force=force,
            envelope=self._envelope_now,
            public=self.public_row,
            routes=self.delivery.items,
        )
        self.delivery.wake()
        self._publish(event)
        return row

    def _publish(self, event: dict[str, Any] | None) -> None:
        """Hand an event to the local sinks (log, stdout); delivery workers call this too."""
        if event is None:
            return
        with self._sink_lock:
            self._to_sinks(event)

    def _to_sinks(self, event: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:
                log.exception("event sink failed")

    def _device_event(self, kind: str, code: str, message: str) -> None:
        data = {"device_id": self.device_id, "code": code, "message": message, "state": self.snapshot()}
        self._emit(self._envelope_now(kind, data))

    def snapshot(self) -> dict[str, Any]:
        active = [
            {"id": r.id, "name": r.name, "state": (self.core.state_of(r.id) or State.RECORDING).value}
            for r in self.core.active
        ]
        states = {a["state"] for a in active}
        delivery = self.delivery.status()
        return {
            "state": "recording" if "recording" in states else "paused" if states else "idle",
            "recordings": active,
            "input_level": None if self._level_db is None else round(max(self._level_db, SILENCE_DBFS), 1),
            "free_storage_mb": None if self._free_mb is None else round(self._free_mb),
            "upload_backlog": delivery["upload_backlog"],
            "delivery": delivery,
            "firmware_version": __version__,
            "last_error": self._error or next(iter(self._standing.values()), None),
            "problems": dict(self._standing),
        }

    # -- shutdown ------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self._stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def _shutdown(self) -> int:
        self.notifier.stopping()
        if self.core.active:
            log.info("shutting down: finishing %d recording(s)", len(self.core.active))
            self._handle(self.core.close(EndReason.SHUTDOWN))
        self._run_controls()
        try:
            self.hw.close()
            if self.api is not None:
                self.api.stop()
            self.delivery.stop()
        finally:
            self.catalog.close()
        log.info("stopped")
        return 0


def _recipient(config: cfg.Config) -> tuple[str | None, str | None]:
    """The age recipient recordings are encrypted to, or the reason the configured one cannot be used."""
    value = config.encryption["public_key"]
    if not value:
        return None, None
    from ..media.encrypted import check_recipient

    try:
        return check_recipient(value), None
    except ValueError as exc:
        return None, str(exc)


def _seconds(value: float):
    from datetime import timedelta

    return timedelta(seconds=value)


def _log_failure(future: Future) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("panel action refused: %s", exc)


__all__ = ["Box", "public"]
