"""Telling systemd how the daemon is (``Type=notify``): READY, STATUS, WATCHDOG, STOPPING.

Through the ``sdnotify`` library; outside systemd (no ``NOTIFY_SOCKET``) every
call does nothing. Watchdog pings are sent from the daemon's loop, at most
twice per ``WatchdogSec``, so a loop that hangs stops pinging and systemd
restarts the service.
"""

from __future__ import annotations

import os
import time

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) else None
        self._last_ping = 0.0

    def _send(self, text: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(text)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= min(self.watchdog_interval, 1.0):
            self._last_ping = now
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")
