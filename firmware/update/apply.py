"""``update``: a bundle onto a box, from the signature check to the restart (the steps are in
``firmware/update/__init__.py``).

The one rule: nothing the box runs changes before the switch. The bundle is copied and checked
in a private staging folder, the new version goes into a slot of its own, its checks run there,
and any refusal up to the switch removes what was made and leaves ``current``, the config, the
catalog and the spool as they were.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import shutil
import sqlite3
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.version import Version

from .. import config as cfg
from . import Reason, Refused, Stage
from .bundle import Bundle
from .history import Step, new_id, record
from .manifest import INSTALLER, MANIFEST, Manifest
from .slots import Layout, Slot
from .state import read_state
from .state import status as switch_status

SERVICE = "edge-recorder.service"
#: What a slot brings when its install.sh records the switch for the update guard (and takes --catalog).
GUARD = "systemd/update-guard"
#: A venv takes more room than its wheels unpacked: byte-compiled files, pip and its own files.
VENV_OVERHEAD = 1.5
VENV_EXTRA = 32 << 20  # bytes

Report = Callable[[Stage, str], None]
log = logging.getLogger("edge-recorder.update")


@dataclass(frozen=True)
class Result:
    version: str
    slot: str
    previous: str | None  # the version that ran before
    restarted: bool
    catalog_copy: Path | None
    guarded: bool  # the switch is pending until the new version confirms it (the update guard)
    id: str = ""  # the update's id in the box's history


def update(
    bundle: Path,
    *,
    root: Path = Path("/"),
    force: bool = False,
    report: Report | None = None,
    via: str = "command",
    update_id: str | None = None,
    request_id: str = "",
    restart: str = "now",
    before_restart: Callable[[], None] | None = None,
) -> Result:
    """Verify ``bundle``, install it into a new slot, check it, switch to it and restart the service.

    Raises ``Refused`` with the reason; until the switch nothing the box runs has changed. Each step
    reached, and a refusal, is added to the box's update history (``history.py``) as update
    ``update_id`` asked for ``via`` one of ``history.VIA``. ``restart``: ``now`` restarts the service
    and waits for it, ``queue`` only queues a restart of a running service (from a unit ordered
    before it, which a waiting restart would deadlock), ``no`` leaves it; ``before_restart`` runs
    first (an MQTT update told to wait for idle waits there for the recordings to end).
    """
    say: Report = report or (lambda stage, text: None)
    box = Layout(Path(root))
    steps = _Steps(box, update_id or new_id(), via, request_id)
    try:
        if not Path(bundle).is_file():
            raise Refused(Reason.MISSING, f"no such bundle: {bundle}")
        on_this_machine = box.root.resolve() == Path("/")
        if on_this_machine and os.geteuid() != 0:
            raise Refused(Reason.PERMISSION, "updating the box needs root: sudo edge-recorder update FILE")
        running = box.slot("current")
        if running is None or running.version is None:
            raise Refused(
                Reason.NOT_INSTALLED,
                f"{box.top} has no current slot to update: install the box with images/install.sh (from the bundle) "
                "first",
            )
        steps.from_version = running.version
        with box.locked():
            _check_confirmed(box)
            shutil.rmtree(box.staging, ignore_errors=True)  # left by an update that was killed
            box.staging.mkdir(mode=0o711)  # its parts are private; the catalog's owner reaches its own
            try:
                result = _update(box, running, Path(bundle), force, say, steps)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise Refused(Reason.NO_SPACE, _no_space(box, Path(bundle))) from None
                raise
            finally:
                shutil.rmtree(box.staging, ignore_errors=True)
    except Refused as refused:
        steps.add("refused", refused.message, reason=refused.reason.value)
        raise
    except OSError as exc:  # the box's file systems: said where it failed, in the history too
        steps.add("refused", f"{exc.filename or 'the update'}: {exc.strerror or exc}", reason=Reason.INSTALL.value)
        raise
    if before_restart is not None:
        before_restart()
    return replace(result, restarted=_restart(on_this_machine, restart, say), id=steps.id)


class _Steps:
    """The history lines of one update (``history.py``); a history that cannot be written never stops it."""

    def __init__(self, box: Layout, update_id: str, via: str, request_id: str) -> None:
        self.box, self.id, self.via, self.request_id = box, update_id, via, request_id
        self.version = self.from_version = ""

    def add(self, stage: str, message: str, **extra: str) -> None:
        if not self.box.top.is_dir():
            return
        step = Step(
            self.id, stage, self.version, self.from_version, self.via, message, request_id=self.request_id, **extra
        )
        try:
            record(self.box, step)
        except OSError as exc:
            log.warning("update: the history in %s was not written: %s", self.box.top, exc)


def _update(box: Layout, running: Slot, path: Path, force: bool, say: Report, steps: _Steps) -> Result:
    size = path.stat().st_size
    check_room(box, 2 * size, size)  # the bundle's copy and its files; the venv's room is checked once it is known
    bundle = Bundle.open(path, box.update_key, box.staging / "bundle.tar")
    manifest = bundle.manifest
    steps.version = manifest.version
    comment = bundle.trusted_comment.replace("\t", " ")
    say(Stage.VERIFIED, f"{path.name}: signed by the key in /etc/edge-recorder/update.pub ({comment})")
    _check_machine(manifest, running, force)
    steps.add("verified", f"edge-recorder {manifest.version}: signed by the box's update key, every file as listed")
    catalog = _catalog_path(box)
    trial = _copy_catalog(catalog, box.staging, say) if catalog.is_file() else None
    schema = _check_schema(manifest, trial) if trial is not None else None
    content = box.staging / "content"
    bundle.extract(content)
    bundle.discard()
    _check_space(box, bundle)

    name = _prepare(box, content, manifest)
    slot = box.slots / name
    try:
        (slot / MANIFEST).write_bytes(manifest.to_json())
        _check_new_version(box, slot, manifest, trial, say)
        say(Stage.INSTALLED, f"edge-recorder {manifest.version} installed in /{box.slots.relative_to(box.root)}/{name}")
        steps.add(
            "installed", f"edge-recorder {manifest.version} installed in slot {name}; it accepts the box's config"
        )
        kept = _keep_catalog(catalog, manifest.version) if catalog.is_file() else None
        guarded = (slot / GUARD).is_file()
        # The rule in images/README.md: the copy goes back with a rollback when the new version migrates.
        put_back = kept if kept is not None and schema is not None and manifest.catalog_schema > schema else None
        _switch(box, slot, say, _recorded(box, catalog, put_back) if guarded else [])
    except BaseException:
        current = box.slot("current")
        if current is None or current.name != name:
            shutil.rmtree(slot, ignore_errors=True)
        raise
    say(Stage.SWITCHED, f"current -> slots/{name} (edge-recorder {manifest.version}), previous -> slots/{running.name}")
    pending = read_state(box) if guarded else None
    steps.add(
        "switched",
        f"edge-recorder {manifest.version} is current, {running.version} is kept to go back to",
        switch_id=pending.id if pending is not None and pending.slot == name else "",
    )
    if guarded:
        say(
            Stage.SWITCHED,
            f"pending: edge-recorder {manifest.version} confirms the update once it has recorded healthily for "
            f"{_confirm_seconds(box)} s ([update] confirm_seconds); a crash loop, a failed start or a reboot before "
            f"then switches back to edge-recorder {running.version}"
            + (" and puts the catalog's copy back" if put_back is not None else ""),
        )
    else:
        say(
            Stage.SWITCHED,
            f"note: edge-recorder {manifest.version} brings no update guard: it is not switched back by itself",
        )
    return Result(manifest.version, name, running.version, False, kept, guarded)


def _check_confirmed(box: Layout) -> None:
    """One update at a time, also across restarts: a switch still pending is an update not finished."""
    last = switch_status(box)
    if last.pending and last.state is not None:
        raise Refused(
            Reason.UNCONFIRMED,
            f"the last update, to edge-recorder {last.state.version}, is not confirmed yet: it is once that version "
            "has recorded healthily for [update] confirm_seconds, or it is switched back (edge-recorder update "
            "--status); update then",
        )


# -- what the manifest says, against this box ----------------------------------------------------------


def _check_machine(manifest: Manifest, running: Slot, force: bool) -> None:
    machine = platform.machine()
    if manifest.architecture != machine:
        raise Refused(Reason.WRONG_MACHINE, f"the bundle is built for {manifest.architecture}; this box is {machine}")
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if manifest.python != python:
        raise Refused(
            Reason.WRONG_MACHINE, f"the bundle is built for Python {manifest.python}; this box has Python {python}"
        )
    assert running.version is not None
    if Version(manifest.version) <= Version(running.version) and not force:
        raise Refused(
            Reason.NOT_NEWER,
            f"edge-recorder {manifest.version} is not newer than the running {running.version} "
            "(--force installs it anyway)",
        )


def setting(box: Layout, section: str, key: str) -> object:
    """A setting of the box's config as its file says it (the default when it does not, or cannot be read:
    the new version's config check says what is wrong with it)."""
    value = getattr(cfg.parse({}), section)[key]
    try:
        with box.config.open("rb") as f:
            table = tomllib.load(f).get(section, {})
        return table.get(key, value) if isinstance(table, dict) else value
    except (OSError, tomllib.TOMLDecodeError):
        return value


def _catalog_path(box: Layout) -> Path:
    """Where the box keeps its catalog: its config's ``[catalog] path``, or the default."""
    return box.on_box(str(setting(box, "catalog", "path")))


#: Room kept beside the recordings' own ``[spool] min_free_mb`` when an update shares their file system.
MARGIN = 64 << 20  # bytes


def check_room(box: Layout, need: int, size: int) -> None:
    """Room in /opt/edge-recorder for ``need`` bytes of an update whose bundle is ``size`` bytes; where /opt is on
    the spool's file system (a Pi's card), the recordings' ``[spool] min_free_mb`` and ``MARGIN`` stay free."""
    top = box.top if box.top.exists() else box.root
    free = shutil.disk_usage(top).free
    keep = 0
    spool = box.on_box(str(setting(box, "spool", "directory")))
    try:
        if spool.stat().st_dev == top.stat().st_dev:
            keep = (int(setting(box, "spool", "min_free_mb")) << 20) + MARGIN
    except (OSError, ValueError, TypeError):
        pass
    if free - keep < need:
        kept = f", keeping {_mb(keep)} for the recordings" if keep else ""
        raise Refused(
            Reason.NO_SPACE,
            f"no space left for the update in /{box.top.relative_to(box.root)} ({_mb(free)} free{kept}, the bundle "
            f"is {_mb(size)}): nothing was changed; free some space and try again",
        )


def _copy_catalog(catalog: Path, staging: Path, say: Report) -> Path | None:
    """A consistent copy to try the migration on, or None when SQLite cannot read the catalog (the
    new daemon moves it aside and rebuilds it from the spool, as this one does)."""
    folder = staging / "catalog"
    folder.mkdir(mode=0o700)
    st = catalog.lstat()
    if not stat.S_ISREG(st.st_mode):
        say(
            Stage.CHECKING,
            f"note: {catalog} is not a regular file; the new version rebuilds the catalog from the spool",
        )
        return None
    if os.geteuid() == 0:
        os.chown(folder, st.st_uid, st.st_gid)
    to = folder / catalog.name
    try:
        _backup(catalog, to)
    except sqlite3.DatabaseError as exc:
        if _is_full(exc):
            raise OSError(errno.ENOSPC, str(exc)) from None
        say(Stage.CHECKING, f"note: {catalog} is not readable ({exc}); the new version rebuilds it from the spool")
        to.unlink(missing_ok=True)
        return None
    return to


_SCHEMA = "import sqlite3, sys; d = sqlite3.connect(sys.argv[1]); print(d.execute('PRAGMA user_version').fetchone()[0])"


def _check_schema(manifest: Manifest, trial: Path) -> int:
    """The schema of the catalog (its copy ``trial``, read as its owner), once the new version is known to read it."""
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _SCHEMA, str(trial)],
        capture_output=True,
        text=True,
        check=False,
        **_as_owner_of(trial.lstat()),
    )
    try:
        schema = int(result.stdout.strip())
    except ValueError:
        raise Refused(Reason.CATALOG, f"the catalog's copy cannot be read: {_last_line(result.stderr)}") from None
    if schema > manifest.catalog_schema:
        raise Refused(
            Reason.CATALOG,
            f"the catalog is at schema {schema}; edge-recorder {manifest.version} reads up to {manifest.catalog_schema}",
        )
    if schema < manifest.catalog_reads_from:
        raise Refused(
            Reason.CATALOG,
            f"the catalog is at schema {schema}; edge-recorder {manifest.version} migrates from schema "
            f"{manifest.catalog_reads_from} on: update to an earlier release first",
        )
    return schema


def _check_space(box: Layout, bundle: Bundle) -> None:
    need = int(bundle.unpacked_size() * VENV_OVERHEAD) + VENV_EXTRA
    free = shutil.disk_usage(box.slots).free
    if free < need:
        raise Refused(
            Reason.NO_SPACE,
            f"not enough space in /{box.top.relative_to(box.root)} for edge-recorder {bundle.manifest.version}: "
            f"{_mb(free)} free, it needs about {_mb(need)}",
        )


# -- the new slot and the new version's checks ----------------------------------------------------------


def _installer(box: Layout, installer: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a version's install.sh on this root, with the Python the box's venvs are made of."""
    python = Path(sys.base_prefix) / "bin" / "python3"
    command = ["bash", str(installer), "--root", str(box.root), "--python", str(python), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, **_PLAIN)


#: How every program of an update runs: from /, with only PATH, HOME and the language of the caller's
#: environment. The folder the bundle came from may hold a pip.py or a venv.py, and PYTHONPATH, PIP_*
#: or a pip.conf could bring code or wheels the bundle's signature does not cover.
_PLAIN: dict = {
    "cwd": "/",
    "env": {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/", "LANG": "C.UTF-8"},
}


def _as_owner_of(st: os.stat_result) -> dict:
    """Run as the owner of the file ``st`` describes (when this runs as root): what the daemon's user
    controls is opened by that user, never by root, so a link it puts there reaches nothing of root's."""
    if os.geteuid() != 0:
        return dict(_PLAIN)
    return _PLAIN | {"user": st.st_uid, "group": st.st_gid, "extra_groups": []}


def _prepare(box: Layout, content: Path, manifest: Manifest) -> str:
    """The bundle's install.sh makes the new slot, offline; returns its name."""
    assert manifest.wheel is not None
    result = _installer(
        box,
        content / INSTALLER,
        "--prepare",
        "--wheel",
        str(content / manifest.wheel),
        "--wheelhouse",
        str(content / "wheels"),
        "--no-index",
    )
    name = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
    if not name:
        if "No space left on device" in result.stderr:
            raise OSError(errno.ENOSPC, "No space left on device")
        raise Refused(
            Reason.INSTALL,
            f"edge-recorder {manifest.version} could not be installed into a new slot: {_last_line(result.stderr)}",
        )
    return name[0]


def _check_new_version(box: Layout, slot: Path, manifest: Manifest, trial: Path | None, say: Report) -> None:
    """The new version's own checks, run by its own interpreter on the box's config and catalog (-I: its own
    firmware, whatever folder the update runs in)."""
    python = str(slot / "bin/python")
    if box.config.is_file():
        result = subprocess.run(
            [python, "-I", "-m", "firmware.cli.main", "config", "check", str(box.config)],
            capture_output=True,
            text=True,
            check=False,
            **_PLAIN,
        )
        if result.returncode != 0:
            raise Refused(
                Reason.CONFIG,
                f"edge-recorder {manifest.version} rejects the box's config: {_last_line(result.stderr, first=True)}",
            )
        say(Stage.CHECKING, f"edge-recorder {manifest.version}: {_last_line(result.stdout)}")
    if trial is not None:
        result = subprocess.run(  # as the copy's owner: the new version's code never opens it as root
            [python, "-I", "-m", "firmware.update.preflight", str(trial)],
            capture_output=True,
            text=True,
            check=False,
            **_as_owner_of(trial.lstat()),
        )
        if result.returncode != 0:
            raise Refused(
                Reason.CATALOG,
                f"edge-recorder {manifest.version} cannot use the box's catalog: {_last_line(result.stderr)}",
            )
        say(Stage.CHECKING, f"edge-recorder {manifest.version}: {_last_line(result.stdout)} (on a copy)")


# -- the switch --------------------------------------------------------------------------------------------


def _keep_catalog(catalog: Path, version: str) -> Path:
    """The catalog as it is just before the switch, kept beside it as ``NAME.before-VERSION`` (only the
    latest such copy), owned and readable as the catalog is: what a previous version goes back to."""
    kept = catalog.with_name(f"{catalog.name}.before-{version}")
    partial = kept.with_name(kept.name + ".partial")
    if not stat.S_ISREG(catalog.lstat().st_mode):
        raise Refused(Reason.CATALOG, f"{catalog} is not a regular file: nothing was changed")
    try:
        _backup(catalog, partial, mode=catalog.lstat().st_mode & 0o777)
    except sqlite3.DatabaseError as exc:
        partial.unlink(missing_ok=True)
        if _is_full(exc):
            raise Refused(
                Reason.NO_SPACE,
                f"no space left in {catalog.parent} for the catalog's copy ({_mb(catalog.stat().st_size)}): "
                "nothing was changed; free some space and try again",
            ) from None
        raise Refused(Reason.CATALOG, f"{catalog} could not be copied before the switch: {exc}") from None
    # Made, owned and moded by the catalog's owner (``_backup``): root changes nothing in that folder by name
    # but this rename, which follows no link.
    os.replace(partial, kept)
    for older in catalog.parent.glob(f"{catalog.name}.before-*"):
        if older != kept:
            older.unlink(missing_ok=True)
    return kept


def _recorded(box: Layout, catalog: Path, put_back: Path | None) -> list[str]:
    """What install.sh records with the switch for the update guard: the catalog, and the copy a rollback
    puts back (paths as the box names them)."""
    args = ["--catalog", "/" + str(catalog.relative_to(box.root))]
    if put_back is not None:
        args += ["--catalog-copy", "/" + str(put_back.relative_to(box.root))]
    return args


def _confirm_seconds(box: Layout) -> object:
    """``[update] confirm_seconds`` of the box's config (the new version checked the config already)."""
    return setting(box, "update", "confirm_seconds")


def _switch(box: Layout, slot: Path, say: Report, recorded: list[str]) -> None:
    """The new slot's own install.sh switches to it: units, the record of the switch (``recorded``), then the
    rename of ``current``, then it removes the slot that is neither current nor previous."""
    saved = _system_files(box)
    result = _installer(box, slot / INSTALLER, "--switch", slot.name, *recorded)
    if result.returncode == 0:
        return
    current = box.slot("current")
    if current is not None and current.name == slot.name:  # what failed came after the switch
        say(Stage.SWITCHED, f"note: after the switch, install.sh said: {_last_line(result.stderr)}")
        return
    # Not switched: the running version's units, guard and entries go back, so its next start is as before.
    for path, kept in saved.items():
        if kept is None:
            path.unlink(missing_ok=True)
        else:
            data, mode = kept
            tmp = path.with_name(f".{path.name}.restoring")
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # whole before it is named: an empty unit after a power cut is a masked one
            tmp.chmod(mode)
            os.replace(tmp, path)
    if "No space left on device" in result.stderr:
        raise OSError(errno.ENOSPC, "No space left on device")
    raise Refused(Reason.INSTALL, f"switching to slot {slot.name} failed: {_last_line(result.stderr)}")


#: What install.sh --switch writes outside the slots before ``current`` changes (images/install.sh, step 2).
SYSTEM_FILES = (
    "usr/lib/systemd/system/edge-recorder.service",
    "usr/lib/systemd/system/edge-recorder-provision.service",
    "usr/lib/systemd/system/edge-recorder-rollback.service",
    "usr/lib/systemd/system/edge-recorder-update.service",
    "usr/lib/systemd/system/edge-recorder-update.path",
    "usr/lib/systemd/system/edge-recorder-update-card.service",
    "usr/lib/edge-recorder/update-guard",
    "usr/share/mender/modules/v3/edge-recorder",
    "usr/lib/sysusers.d/edge-recorder.conf",
    "usr/lib/tmpfiles.d/edge-recorder.conf",
)


def _system_files(box: Layout) -> dict[Path, tuple[bytes, int] | None]:
    """The running version's files that a switch replaces, with their modes, as they are (None: not there)."""
    out: dict[Path, tuple[bytes, int] | None] = {}
    for name in SYSTEM_FILES:
        path = box.root / name
        try:
            out[path] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        except FileNotFoundError:
            out[path] = None
    return out


def _restart(on_this_machine: bool, how: str, say: Report) -> bool:
    if how == "no":
        return False
    if not on_this_machine:
        say(Stage.SWITCHED, f"would restart {SERVICE} (the root is not this machine's)")
        return False
    if not Path("/run/systemd/system").is_dir():
        say(Stage.SWITCHED, f"not restarted: systemd is not running here; start {SERVICE} when it is")
        return False
    if how == "queue":
        active = subprocess.run(["systemctl", "is-active", "--quiet", SERVICE], check=False, **_PLAIN)
        if active.returncode != 0:
            say(Stage.SWITCHED, f"{SERVICE} is not running: it starts the new version when it starts")
            return False
        command = ["systemctl", "restart", "--no-block", SERVICE]
    else:
        command = ["systemctl", "restart", SERVICE]
    result = subprocess.run(command, capture_output=True, text=True, check=False, **_PLAIN)
    if result.returncode != 0:
        say(Stage.SWITCHED, f"systemctl restart {SERVICE} failed: {_last_line(result.stderr)}")
        return False
    say(Stage.RESTARTED, f"restarted {SERVICE}" if how == "now" else f"a restart of {SERVICE} is queued")
    return True


# -- small helpers ---------------------------------------------------------------------------------------


_BACKUP = (
    "import os, sqlite3, sys; s, d = map(sqlite3.connect, sys.argv[1:3]); s.backup(d); d.close(); s.close()\n"
    "if len(sys.argv) > 3: os.chmod(sys.argv[2], int(sys.argv[3], 8))"
)


def _backup(source: Path, to: Path, mode: int | None = None) -> None:
    """A consistent copy of a SQLite file with SQLite's online backup (the daemon may be writing).

    It runs as the file's owner: opening the catalog may create its -wal and -shm files, and a
    pair owned by root would lock the daemon out of its own catalog.
    """
    st = source.lstat()
    mode_arg = [] if mode is None else [f"{mode:o}"]
    try:
        result = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _BACKUP, str(source), str(to), *mode_arg],
            capture_output=True,
            text=True,
            check=False,
            **_as_owner_of(st),
        )
    except OSError as exc:  # the owner cannot run this Python (a folder on the way is closed to it)
        raise sqlite3.DatabaseError(f"cannot copy it as its owner ({exc})") from None
    if result.returncode != 0:
        raise sqlite3.DatabaseError(_last_line(result.stderr).removeprefix("sqlite3.").partition(": ")[2])


def _is_full(exc: sqlite3.Error) -> bool:
    return "full" in str(exc)


def _no_space(box: Layout, bundle: Path) -> str:
    top = box.top if box.top.exists() else box.root
    free = shutil.disk_usage(top).free
    size = bundle.stat().st_size if bundle.is_file() else 0
    return (
        f"no space left for the update in /{box.top.relative_to(box.root)} ({_mb(free)} free, the bundle is "
        f"{_mb(size)}): nothing was changed; free some space and try again"
    )


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.0f} MB"


def _last_line(text: str, *, first: bool = False) -> str:
    lines = [line.removeprefix("edge-recorder: error: ").strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    return lines[0] if first else lines[-1]
