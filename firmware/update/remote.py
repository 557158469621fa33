"""The MQTT ``update`` command, on the daemon's side: the bundle downloaded, then handed to root.

Theory of operation
-------------------
``start`` answers at once. It checks the command's fields (``download.parse_request``), that
this box can be updated (it runs from a slot, no update of its own is under way, the last switch
is not still pending) and that no recording is active, unless the command says ``wait_for_idle``:
an update restarts the daemon, and a call cut in half is worse than an update an hour later.
The answer names the update's ``id``, which every ``device.update`` event about it carries.

Then a thread downloads the bundle and its signature into the daemon's inbox
(``download.download_release``: HTTPS, resumable, flat memory, never into the room the
recordings keep on the card), saying ``downloading`` with the bytes so far at most every
``EVERY_FRACTION`` of the bundle or ``EVERY_SECONDS``. A bundle is downloaded under its sha256,
so a download cut short (a restart, a lost network) is resumed by the next command for the same
bundle. Once it is whole, and once no recording is active if the command said to wait, the
request is handed to root (``inbox.put``) and root's ``edge-recorder update --pending`` takes it:
what follows (verified, installed, switched, refused) is in the history, which ``news.py`` reads.
A download that fails is announced here as ``refused``, with the reason.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..control import UpdateError
from . import Reason, Refused, history, inbox, signing
from .download import DownloadRequest, download_release, parse_request, room_on, shown_url
from .history import Step, new_id
from .news import UpdateNews
from .state import status

log = logging.getLogger("edge-recorder.update")

#: A request root has not taken after this long is forgotten (the path unit does not run).
STALE_SECONDS = 15 * 60
#: A download that takes longer is stopped (a server trickling bytes would hold every later update off).
DOWNLOAD_SECONDS = 60 * 60
#: Room kept beside the recordings' own [spool] min_free_mb.
MARGIN = 64 << 20
EVERY_FRACTION = 0.10
EVERY_SECONDS = 30.0
IDLE_POLL = 1.0
FLAGS = ("wait_for_idle", "force")


class RemoteUpdates:
    """Updates asked for over MQTT (``control.Updates``): one at a time, downloaded into ``folder``."""

    def __init__(
        self,
        folder: Path,
        news: UpdateNews,
        *,
        active: Callable[[], bool],
        keep_free: int,
        ca_file: str | None = None,
        running: str = "",
        allow_downgrade: bool = False,
    ) -> None:
        self.folder = folder
        self.news = news
        self.active = active
        self.keep_free = keep_free + MARGIN
        self.room = room_on(folder.parent, self.keep_free)
        self.ca_file = ca_file or None
        self.running = running
        self.allow_downgrade = allow_downgrade
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._handed: dict[str, float] = {}  # requests this process handed over: when (monotonic)
        self._stopping = False

    def start(self, fields: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        wanted = parse_request(fields)
        flags = {name: fields.get(name, False) for name in FLAGS}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"update: {name} must be true or false")
        if flags["force"] and not self.allow_downgrade:
            raise UpdateError(
                "force (a release not newer than the running one) is not taken over MQTT unless the box's config "
                "says [update] allow_downgrade = true: going back brings back what later releases fixed",
                code="downgrade_not_allowed",
            )
        with self._lock:
            self._check_free(flags["wait_for_idle"])
            request = inbox.Request(
                new_id(),
                inbox.bundle_name(_path_of(wanted.url)),
                request_id=request_id[:128],
                **flags,
            )
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, args=(wanted, request), name="update-download", daemon=True
            )
            self._thread.start()
        log.info("update %s: downloading %s", request.id, shown_url(wanted.url))
        return {
            "id": request.id,
            "stage": "downloading",
            "name": request.name,
            "wait_for_idle": request.wait_for_idle,
        }

    def stop(self, timeout: float = 5.0) -> None:
        """End a download under way (its .part stays for the next command for the same bundle)."""
        self._stopping = True
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- checks ---------------------------------------------------------------------------------------
    def _check_free(self, wait_for_idle: bool) -> None:
        if self._thread is not None:
            self._thread.join(0.5)  # one that has just said its last word
        if self._thread is not None and self._thread.is_alive():
            raise UpdateError("an update is being downloaded already: one at a time", code="update_busy")
        busy = self.news.box.busy()
        if not busy:  # root holding the lock may be about to take them
            self._forget_stale_requests()
        if busy or inbox.pending(self.folder):
            raise UpdateError("an update is being installed already: one at a time", code="update_busy")
        last = status(self.news.box)
        if last.pending and last.state is not None:
            raise UpdateError(
                f"the last update, to edge-recorder {last.state.version}, is not confirmed yet: it is once that "
                "version has recorded healthily for [update] confirm_seconds, or it is switched back",
                code="update_unconfirmed",
            )
        if self.active() and not wait_for_idle:
            raise UpdateError(
                "recordings are active and an update restarts the recorder: send the command again once they "
                'have ended, or with "wait_for_idle": true to download now and install when none is active',
                code="recording_active",
            )

    # -- the download ----------------------------------------------------------------------------------
    def _run(self, wanted: DownloadRequest, request: inbox.Request) -> None:
        deadline = threading.Timer(DOWNLOAD_SECONDS, self._stop.set)
        deadline.daemon = True
        deadline.start()
        try:
            self.folder.mkdir(mode=0o750, exist_ok=True)
            self._forget_other_downloads(wanted.sha256)
            download = self.folder / f"{wanted.sha256}.tar"
            download_release(
                wanted,
                download,
                max_bytes=inbox.MAX_BUNDLE,
                ca_file=self.ca_file,
                room=self.room,
                progress=_Every(lambda done, total: self._say_downloading(request, done, total)),
                stop=self._stop,
            )
            deadline.cancel()
            self._check_room_to_install(download)
            signing.signature_path(download).rename(self.folder / f"{request.bundle}.minisig")
            download.rename(self.folder / request.bundle)
            if request.wait_for_idle and self.active():
                self._step(request, "downloading", "downloaded; waiting for the active recordings to end")
                while self.active():
                    if self._stop.wait(IDLE_POLL):
                        raise Refused(
                            Reason.CANCELLED,
                            "the recorder stopped while the update waited for the recordings to end: send the "
                            "command again",
                        )
            inbox.put(self.folder, request)
            self._handed[request.id] = time.monotonic()
            log.info("update %s: handed over to edge-recorder-update.service", request.id)
        except Refused as refused:
            message = refused.message
            if refused.reason is Reason.CANCELLED and not deadline.is_alive() and not self._stopping:
                message = (
                    f"the download took longer than {DOWNLOAD_SECONDS // 60} min and was stopped: the same command "
                    "again resumes it"
                )
            log.warning("update %s refused: %s", request.id, message)
            self._discard(request)
            self._step(request, "refused", message, reason=refused.reason.value)
        except OSError as exc:
            log.error("update %s: the inbox %s: %s", request.id, self.folder, exc)
            self._discard(request)
            self._step(request, "refused", f"the download could not be kept in {self.folder}: {exc.strerror or exc}",
                       reason="install")  # fmt: skip
        except Exception:  # the daemon records on, whatever this thread meets
            log.exception("update %s: the download failed", request.id)
        finally:
            deadline.cancel()

    def _check_room_to_install(self, download: Path) -> None:
        """Root copies the bundle, copies it again while checking it and unpacks it: room for that too, beside what
        the recordings keep, or the download goes and the room with it."""
        size = download.stat().st_size
        free = shutil.disk_usage(self.folder).free
        if free - self.keep_free < 3 * size:
            download.unlink(missing_ok=True)
            signing.signature_path(download).unlink(missing_ok=True)
            raise Refused(
                Reason.NO_SPACE,
                f"no room to install {size / 1e6:.0f} MB: it needs about {3 * size / 1e6:.0f} MB more beside what the "
                f"recordings keep, and {max(free - self.keep_free, 0) / 1e6:.0f} MB are free",
            )

    def _say_downloading(self, request: inbox.Request, done: int, total: int | None) -> None:
        shown = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        self._step(request, "downloading", f"{request.name}: {shown}", received=done, total=total)

    def _step(self, request: inbox.Request, stage: str, message: str, **extra: Any) -> None:
        reason = extra.pop("reason", "")
        step = Step(request.id, stage, "", self.running, "mqtt", message, reason, request_id=request.request_id)
        try:
            self.news.say(step, **extra)
        except Exception:  # the loop is stopping: the event is not sent, the log has it
            log.warning("update %s: %s (not announced: the recorder is stopping)", request.id, message)

    def _forget_stale_requests(self) -> None:
        """A request root never took (edge-recorder-update.path not running) must not block every later update.
        How long it waited is measured on the monotonic clock for what this process handed over (a clock set at
        boot moves the wall clock by years), by the file's time for what an earlier run left."""
        for path in inbox.pending(self.folder):
            stem = path.name.removesuffix(inbox.SUFFIX)
            handed = self._handed.get(stem)
            try:
                waited = time.monotonic() - handed if handed is not None else time.time() - path.lstat().st_mtime
            except OSError:
                continue
            if waited < STALE_SECONDS:
                continue
            log.error("update: %s was not taken in %d min: is edge-recorder-update.path enabled?", path, waited // 60)
            inbox.discard(path)
            if history.ID.fullmatch(stem):
                message = (
                    f"handed over but not installed within {STALE_SECONDS // 60} min: edge-recorder-update.path "
                    "is not running on this box"
                )
                self.news.say(Step(stem, "refused", "", self.running, "mqtt", message, "install"))

    def _discard(self, request: inbox.Request) -> None:
        for name in (request.bundle, f"{request.bundle}.minisig"):
            (self.folder / name).unlink(missing_ok=True)

    def _forget_other_downloads(self, sha256: str) -> None:
        """Downloads cut short for other bundles give their room back: only one is resumed."""
        for path in self.folder.iterdir():
            if path.name.startswith(sha256) or path.name.endswith(inbox.SUFFIX):
                continue
            if path.name.endswith((".part", ".part.json", ".tar", ".minisig")):
                path.unlink(missing_ok=True)


class _Every:
    """A download's progress, passed on at its start, its end, and at most every ``EVERY_FRACTION`` or
    ``EVERY_SECONDS`` between."""

    def __init__(self, tell: Callable[[int, int | None], None]) -> None:
        self.tell = tell
        self.told_at = -EVERY_SECONDS
        self.told = -1.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        fraction = done / total if total else 0.0
        end = total is not None and done >= total
        if self.told >= 0 and not end and fraction - self.told < EVERY_FRACTION and now - self.told_at < EVERY_SECONDS:
            return
        if end and self.told >= 1.0:
            return
        self.told, self.told_at = (1.0 if end else fraction), now
        self.tell(done, total)


def _path_of(url: str) -> str:
    return urlsplit(url).path
