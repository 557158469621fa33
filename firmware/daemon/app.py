"""The box: the one composition root. It builds every piece and hands each only what it uses.

Read ``Box.__init__`` top to bottom: the hardware (``hal``, through
``hardware``), the recording session (``firmware.core``), storage (the catalog,
the spool and the journal that writes both), delivery (the outbox, MQTT,
callbacks, uploads, retention), the audio loop that owns the session and the
capture queue, the control API over the loop and the journal, and the front
ends (MQTT commands, the HTTP API, the GPIO panel), each of which gets the
control API and its own config section, nothing else. Beside them, the status file
(``status_file``), which ``edge-recorder status`` reads on the box, and the confirmation this version
owes when it was just switched to by an update (``firmware.update.confirm``), and the news of updates
(``firmware.update.news``: ``device.update`` events, the state's ``update``).

``Box.run`` then starts them in order: the status file, delivery, start-up recovery (part files
a crash left, ``recovery``), the HTTP API, and the audio loop on this thread
until SIGTERM or the end of a simulated input; on the way out the recordings
end with ``shutdown`` and everything is closed in reverse. SIGHUP re-reads the
config between two audio periods (``reload``).
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from .. import config as cfg
from ..catalog import open_catalog
from ..cloudevents import CloudEvents, Timebase
from ..control import Control
from ..core import EndReason, InputLayout, Session, Started
from ..delivery.routes import Routes
from ..delivery.service import Delivery
from ..frontends import panel as panel_front
from ..frontends.mqtt_commands import Commands
from ..journal import Journal
from ..spool import Reserve, Takes
from ..update.confirm import Confirmation, running_slot
from ..update.news import ANNOUNCED, UpdateNews
from ..update.remote import RemoteUpdates
from . import recovery
from .hardware import Hardware, build
from .loop import SILENCE_DBFS, AudioLoop, LoopSettings
from .notify import Notifier
from .status_file import StatusFile, status_path
from .system import boot_id, clock_synchronized

log = logging.getLogger("edge-recorder.box")

#: The daemon's exit status when it ends to restart into a version an update switched to while it ran
#: (EX_TEMPFAIL: not a failure of its own; the unit's Restart=on-failure starts the new version).
RESTART_FOR_UPDATE = 75

__all__ = ["SILENCE_DBFS", "Box"]


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
        self.notifier = notifier or Notifier()
        self._reload = threading.Event()

        # hardware: the capture decides the input's shape (a simulated WAV brings its own)
        self.hw = hardware or build(config, audio_seconds=lambda: self.loop.seconds())
        a = config.audio
        rate = self.hw.capture.sample_rate
        layout = InputLayout(rate, self.hw.capture.channels, a["inbound_channel"], a["outbound_channel"])

        # the recording session
        self.session = Session(layout, options=config.recording)

        # storage
        self.spool_dir = Path(config.spool["directory"])
        self.encrypt_to, self.encryption_problem = _recipient(config)
        self.takes = Takes(
            self.spool_dir,
            rate,
            file_names="id",
            sync_seconds=config.spool["fsync_interval"],
            encrypt_to=self.encrypt_to,
        )
        self.catalog, self.catalog_moved = open_catalog(Path(config.catalog["path"]))
        sim = config.sim
        unpaced = sim["enabled"] and (sim["capture"] == "alsa" or sim["pace"] == "fast")
        clock_synced, boot = clock_synchronized(), boot_id()
        self.journal = Journal(
            self.catalog,
            self.takes,
            CloudEvents(self.device_id, Timebase(datetime.now(UTC), rate)),
            routes=Routes(config, self.device_id).items,
            device_id=self.device_id,
            input_rate=rate,
            row_extras=lambda event: self._row_extras(event, clock_synced, boot),
            position=lambda: self.loop.position,
            audio_clock=unpaced,
            sinks=sinks or (),
            on_change=self._changed,
            state=lambda: self.loop.state(),
            reserve=Reserve(self.spool_dir),
        )

        # the audio loop: the session, the capture queue, tones, the LED
        self.loop = AudioLoop(
            self.session,
            self.journal,
            self.hw,
            LoopSettings(
                self.spool_dir,
                config.spool["min_free_mb"],
                a["buffer_seconds"],
                a["reconnect_grace"],
                unpaced,
            ),
            notifier=self.notifier,
            delivery_status=lambda: self.delivery.status(),
            update_status=lambda: news.snapshot() if (news := getattr(self, "news", None)) else None,
            encryption_problem=self.encryption_problem,
        )
        self.loop.between = self._between_periods

        # field updates (from a slot only): what they left on the box, as device.update events and in the
        # state; the MQTT update command's downloads into the daemon's inbox
        slot = running_slot()
        self.news = (
            UpdateNews(slot[0], self.spool_dir.parent / ANNOUNCED, self._announce_update, running_slot=slot[1])
            if slot
            else None
        )
        self._restarting = False
        self.updates = (
            RemoteUpdates(
                self.spool_dir.parent / "updates",
                self.news,
                active=lambda: bool(self.loop.active()),
                keep_free=config.spool["min_free_mb"] << 20,
                ca_file=config.update["ca_file"],
                running=__version__,
                allow_downgrade=config.update["allow_downgrade"],
            )
            if self.news is not None
            else None
        )

        # the control API, and the front ends on it
        self.control = Control(
            self.loop,
            self.journal,
            defaults=lambda: self.config.recording,
            destinations=lambda: self.config.upload_destinations(),
            updates=self.updates,
        )
        self.delivery = Delivery(
            config,
            self.catalog,
            device_id=self.device_id,
            envelope=self.journal.envelope_now,
            public=self.journal.public_row,
            snapshot=self.loop.state,
            commands=Commands(self.control, token=config.mqtt["command_token"], auth=config.mqtt["command_auth"]),
            clock_synced=clock_synchronized,
            free_bytes=lambda: shutil.disk_usage(self.spool_dir).free,
            notify=self.journal.publish,
            links=self._links,
        )
        # what `edge-recorder status` reads on the box, without the network
        self.status_file = StatusFile(
            status_path(config.catalog["path"]),
            snapshot=self.loop.state,
            recording=self._recording_status,
            broker=self._broker_status,
            phase=self._phase,
            identity={
                "device_id": self.device_id,
                "catalog": str(config.catalog["path"]),
                "spool": str(self.spool_dir),
                "min_free_mb": config.spool["min_free_mb"],
            },
        )
        # an update not confirmed yet: this version confirms it once it has recorded healthily for long enough
        self.confirmation = Confirmation.pending(config.update["confirm_seconds"])
        self._stopping = False
        self.api = None
        if config.http["listen"]:
            from ..frontends.http.server import ApiServer

            self.api = ApiServer(self.control, config.http)
            self.journal.media_link = self.api.media_url
        if self.hw.panel is not None:
            panel_front.wire(
                self.hw.panel,
                self.control,
                self.loop.submit,
                pause_button=config.gpio["pause_button"] is not None,
            )
        self._apply_settings(config)

    # -- what the pieces read of each other ---------------------------------------------------
    @property
    def position(self) -> int:
        return self.loop.position

    def _links(self, row: dict[str, Any]) -> dict[str, str | None]:
        """A recording's media links signed now, for a callback about to be sent (none without the API)."""
        if self.api is None:
            return {}
        return {
            "media_url": self.api.media_url(row),
            "recording_url": self.api.recording_url(row),
        }

    def _row_extras(self, event: Started, clock_synced: bool, boot: str | None) -> dict[str, Any]:
        return {
            "start_monotonic": self.loop.mono_origin + event.recording.first / self.loop.rate,
            "clock_synced": clock_synced,
            "boot_id": boot,
        }

    def _changed(self, event: dict[str, Any]) -> None:
        self.delivery.wake()
        self.status_file.wake()
        if event["type"].startswith("recording."):
            self.delivery.state_changed()

    def _recording_status(self, recording_id: str) -> dict[str, Any]:
        """What the status file says of an active recording beside the state's id, name and state."""
        row = self.catalog.get(recording_id) or {}
        started = row.get("start_monotonic")  # audio time, as the monotonic clock at the recording's first sample
        now = self.loop.mono_origin + self.loop.seconds()
        return {
            "source": row.get("source"),
            "call_id": row.get("call_id"),
            "start_time": row.get("start_time"),
            "duration": None if started is None else round(max(0.0, now - started), 1),
        }

    def _broker_status(self) -> tuple[str, str | None]:
        link = self.delivery.link
        if link is None:
            return "off", None
        return ("connected" if link.connected.is_set() else "disconnected"), link.last_error

    def _phase(self) -> str:
        if self._stopping or self.loop.stopping:
            return "stopping"
        return "ready" if self.loop.capture_thread is not None else "starting"

    def _idle(self) -> bool:
        """Nothing a restart would cut: no recording, no call under way (one waiting for speech has none yet),
        no key sequence half keyed."""
        return not self.loop.active() and not self.session.calls.in_call and not self.session.keying

    def _announce_update(self, step: dict[str, Any]) -> None:
        """A ``device.update`` event (docs/mqtt.md): a step of an update, with the state as it is now."""

        def emit() -> None:
            data = {"device_id": self.device_id, **step, "state": self.loop.state()}
            self.journal.emit(self.journal.envelope_now("device.update", data))

        self.loop.call(emit)  # events leave in order from the loop

    def _healthy(self) -> bool:
        """Recording as it should, for an update's confirmation: capture open, the loop turning (it sends the
        watchdog pings) and no error of the box's own. A standing problem of the config (a refused
        provisioning file, an unusable key) does not count: the previous version would have it too."""
        state = self.loop.state()
        error = state["last_error"]
        return self._phase() == "ready" and (error is None or error in state["problems"].values())

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> int:
        log.info("edge-recorder %s starting", __version__)
        if self.confirmation is not None:
            log.info("update: %s", self.confirmation.describe())
        self.loop.claim()  # from here on the session is the loop's: early commands queue for it
        self._install_signals()
        self.status_file.start()
        self.delivery.start()
        if self.encryption_problem:
            log.error("encryption is on but its key cannot be used: %s; recording is refused", self.encryption_problem)
            self._problem("encryption_key", f"[encryption] public_key: {self.encryption_problem}; recording is refused")
        self._report_provisioning()
        self.journal.announce_recovered(
            recovery.recover(self.spool_dir, self.catalog, self.takes, reserve=self.journal.reserve)
        )
        self.journal.reserve.hold()
        if self.api is not None:
            try:
                self.api.start()
            except OSError as exc:  # the box records without its API rather than not at all
                log.error("HTTP API not started on %s: %s", self.config.http["listen"], exc)
                self.journal.device_event("device.error", "api", f"HTTP API not started: {exc}")
                self.api = None
        ended = self.loop.run()
        if ended:
            self.loop.finish(EndReason.CALL_END)
        code = self._shutdown()
        return RESTART_FOR_UPDATE if self._restarting else code

    def stop(self) -> None:
        """Ask the loop to finish active recordings (``shutdown``) and return."""
        self.loop.stop()

    def _shutdown(self) -> int:
        self._stopping = True
        self.notifier.stopping()
        self.loop.finish(EndReason.SHUTDOWN)
        if self.updates is not None:
            self.updates.stop()  # a download under way ends (resumed by the next command for it)
            self.news.flush()
        try:
            self.hw.close()
            if self.api is not None:
                self.api.stop()
            self.delivery.stop()
        finally:
            self.status_file.stop()
            self.catalog.close()
        log.info("stopped")
        return 0

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.loop.stop())
        signal.signal(signal.SIGINT, lambda *_: self.loop.stop())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def _between_periods(self) -> None:
        if self._reload.is_set():
            self._reload.clear()
            self.reload()
        if self.confirmation is not None and self.confirmation.observe(self._healthy):
            self.confirmation = None
        if self.news is not None:
            self.news.poll()
            if self.news.outdated and self._idle() and not self._restarting and not self.news.box.busy():
                # The update switched while this version ran; systemd's Restart= starts the new one.
                log.info("update: another version is current now: restarting into it, no recording being active")
                self._restarting = True
                self.loop.stop()

    # -- problems that last until fixed ------------------------------------------------------------
    def _problem(self, code: str, message: str) -> None:
        self.loop.report(code, message)
        self.journal.device_event("device.error", code, message)

    def _report_provisioning(self) -> None:
        """A config file on the boot partition that first-boot provisioning refused: say so until fixed."""
        from ..provision import MARKER, read_marker

        # the state directory holds the spool; on a box it is /var/lib/edge-recorder, where provisioning writes
        problem = read_marker(self.spool_dir.parent / MARKER.name)
        if problem is None:
            return
        applied = problem.get("code") == "provision_left_secrets"  # the new config is in use, its copy stayed
        log.error(
            "provisioning: %s (%s)",
            problem["message"],
            "config applied" if applied else "running on the previous config",
        )
        self._problem(problem["code"], problem["message"])

    # -- settings that SIGHUP can change -------------------------------------------------------------
    def _apply_settings(self, config: cfg.Config) -> None:
        self.config = config
        wired = self.hw.panel is not None and config.gpio["hook_switch"] is not None
        self.session.configure(config.recording, config.session_rules(hook_switch=wired))
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
        self.journal.audit("config_reload", "sighup", new.source, ", ".join(changed) or "no change")


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
