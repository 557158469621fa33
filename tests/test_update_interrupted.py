"""An update cut short by ``kill -9`` or by a power cut, at any point: the box still starts a working version.

A box with 0.1.0 installed (tests/releases.py: ``images/install.sh`` into an empty root, a catalog and a
recording owned by the daemon's user, the simulator on, as in tests/test_rollback.py) lives on an ext4 file
system of its own: an image file made with ``mkfs.ext4 -d``, loop-mounted with ext4's defaults and ``noatime``,
as a Pi's root is. Each kill point takes a fresh copy of that image, runs the box's own ``edge-recorder update
--root BOX`` to a 0.2.0 bundle (built once for the module), and stops it at a moment drawn at random, in one
of three ways:

- **kill -9**: SIGKILL to the update's whole process group (it runs install.sh, pip, the catalog's copies as
  subprocesses). What the processes wrote stays in the kernel's page cache and everything after sees it:
  a crash of the program on a box that keeps its power, not a power cut.
- **power cut**: the process group stopped (SIGSTOP), then the file system shut down as the kernel's own
  crash tests do it (``EXT4_IOC_SHUTDOWN`` with ``EXT4_GOING_FLAGS_NOLOGFLUSH``, xfstests' "godown"): the
  journal is aborted and no further block reaches the image, so whatever was not written back yet is lost,
  file data and the metadata of the running journal transaction alike. Then the processes are killed and
  the file system is mounted again (a copy of the image as the cut left it): ext4 replays its journal, as
  at the next boot. ``test_a_simulated_power_cut_loses_what_was_not_synced`` shows that it does lose data.
- **power cut after a journal commit**: the same, just after ext4 committed its journal, as it does by
  itself every 5 s and whenever any file on it is fsynced (the running daemon's catalog, at each change).
  The names, sizes and links of the last moments are then on the disk and file data not yet written back
  is not: the power cut that finds a file replaced in place (unlinked and written again) empty.

Not simulated: the storage's own volatile write cache. The loop device hands each write to the image file
at once, so a write the kernel had submitted before the cut is never lost, torn or reordered with another;
an SD card may do all three to writes not yet flushed. Replaying every prefix of the block writes between
flushes (dm-log-writes, dm-flakey) would cover that; it needs the kernel's device mapper, which this machine
does not have (no ``/dev/mapper/control``), or a VM whose disk cache the test drops.

The moments are drawn from the parts of one update measured first on a copy of the same image (``PARTS``:
the bundle's copy and check, pip making the new slot, the new version's checks and the catalog's copy, the
units just installed by ``install.sh --switch``, the moments just before and just after the rename of
``current``), each as a delay after the step that begins its part, as the interrupted update reaches it (the
files it leaves as it goes), so that it lands in that part whatever pip's speed. A failure names the seed;
``EDGE_RECORDER_KILL_SEED=N`` draws the same points again.

After each one:

(a) ``current`` names a whole slot of 0.1.0 or 0.2.0 (every file pip recorded is there with its size, and
    in the new version's slot, the one the update was writing, with its sha256), and
    ``/opt/edge-recorder/bin/edge-recorder --version``, chrooted into the box, is that version;
    ``previous``, when there is one, names a whole slot too; the units, the update guard, the sysusers and
    tmpfiles entries and the links that enable the units are as they were (0.2.0 brings the same bytes);
(b) the config, the update key and the spool are as they were, and the catalog opens, passes SQLite's
    integrity check and holds the same rows; nothing in its folder is root's;
(c) the next boot (a new boot id, then a start as systemd makes it: the installed guard, then the daemon,
    as in tests/test_rollback.py) runs 0.1.0 to READY, and the state file agrees: no switch recorded, or
    the switch to 0.2.0 switched back (it was never confirmed);
(d) the same bundle then updates the box: what the kill left (a staging folder, a slot half made or whole
    but never switched to) does not get in the way, and afterwards only ``current`` and ``previous`` are
    left, with the units whole.

Needs root (loop devices, mounts, chroot). About two minutes and a half.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import random
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from firmware.update.apply import SYSTEM_FILES
from firmware.update.slots import Layout, Slot
from firmware.update.state import Phase, read_state

from .box_chroot import BOOT_ID, chrooted, daemon_user, make_box, ready, start, status_lines, work_folder
from .programs import run, tool
from .releases import (
    AS_ROOT,
    STATE,
    TOP,
    Keys,
    build,
    checked,
    copy_source,
    make_keys,
    make_wheelhouse,
    minisign_sign,
    update,
)

pytestmark = pytest.mark.skipif(not AS_ROOT, reason="loop-mounted file systems, chroot and mounts: root only")

#: The seed the kill points are drawn from; a failure names it, and this variable draws the same points again.
SEED_VARIABLE = "EDGE_RECORDER_KILL_SEED"
SEED = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(1 << 32))
KILL = "kill -9"
POWER_CUT = "power cut"
COMMITTED_CUT = "power cut after a journal commit"

OLD, NEW = "0.1.0", "0.2.0"
IMAGE_SIZE = 1 << 30  # sparse; two slots, a third made again by (d), the bundle and its files fit
CONFIG = """\
[device]
id = "front-desk-3"

[sim]
enabled = true
audio = "/var/lib/edge-recorder/line.wav"
"""

#: _IOR('X', 125, __u32) from linux/ext4.h, and its flag "shut down without flushing the journal or the data".
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


# -- the steps of an update, as the files it leaves show them ---------------------------------------------


#: The last file install.sh --switch puts in place outside the slots before it runs systemd-sysusers.
TMPFILES = "usr/lib/tmpfiles.d/edge-recorder.conf"


def _current_is_new(progress: Progress) -> bool:
    try:
        return os.readlink(progress.root / TOP / "current") == f"slots/{NEW}"
    except OSError:
        return False


#: In the order the update reaches them (images/README.md, "Updating a box"); a kill point is measured from
#: the step it is drawn after, as this update reached it.
STEPS: tuple[tuple[str, Callable[[Progress], bool]], ...] = (
    ("the staging folder made", lambda p: (p.root / TOP / ".update").exists()),
    ("the new slot begun", lambda p: (p.root / TOP / "slots" / NEW).exists()),
    ("pip done", lambda p: (p.root / TOP / "slots" / NEW / "images/install.sh").exists()),
    ("the new version's checks", lambda p: (p.root / TOP / "slots" / NEW / "manifest.json").exists()),
    ("the catalog kept", lambda p: (p.root / STATE / f"catalog.sqlite3.before-{NEW}").exists()),
    ("the units installed", lambda p: p.mtime(TMPFILES) != p.entries_written),
    ("the switch recorded", lambda p: (p.root / TOP / "update.state").exists()),
    ("previous linked", lambda p: (p.root / TOP / "previous").is_symlink()),
    ("current renamed", _current_is_new),
)
NAMES = ["started", *(name for name, _ in STEPS), "ended"]

#: Where the kill points fall: parts of an update, each from one step to a later one, with what happens in it and
#: how it is stopped there (one point for each mode, drawn uniformly over the time that part took in the measured
#: update).
PARTS = (
    # the lock, the bundle copied and checked, the catalog's trial copy, the bundle's files
    ("bundle", "started", "the new slot begun", (KILL,)),
    # the new slot's venv, pip installing the wheels
    ("pip", "the new slot begun", "pip done", (COMMITTED_CUT,)),
    # the slot's last files, the new version's checks, the catalog's copy
    ("checks", "pip done", "the catalog kept", (POWER_CUT,)),
    # install.sh --switch, its units, guard and entries just installed: users, config, enable
    ("units", "the units installed", "the switch recorded", (COMMITTED_CUT,)),
    # previous linked, everything synced, the rename
    ("before-rename", "the switch recorded", "current renamed", (KILL, COMMITTED_CUT)),
    # synced again, the links, the prune, the staging folder removed
    ("after-rename", "current renamed", "ended", (POWER_CUT, KILL)),
)
POINTS = [(part, mode) for part, _, _, modes in PARTS for mode in modes]


@dataclass
class Progress:
    """When each step was first seen, in seconds since the update started (a step seen marks those before it)."""

    root: Path
    seen: dict[str, float] = field(default_factory=lambda: {"started": 0.0})
    entries_written: int = 0  # when the box's tmpfiles.d entry was written, before the update

    def __post_init__(self) -> None:
        self.entries_written = self.mtime(TMPFILES)

    def mtime(self, name: str) -> int:
        try:
            return (self.root / name).stat().st_mtime_ns
        except OSError:
            return 0

    def poll(self, now: float) -> None:
        for name, reached in STEPS:
            if name not in self.seen and reached(self):
                self.seen[name] = now

    def reached(self, step: str) -> float | None:
        later = [at for name, at in self.seen.items() if NAMES.index(name) >= NAMES.index(step)]
        return min(later) if later else None


@dataclass(frozen=True)
class KillPoint:
    number: int
    mode: str  # KILL, POWER_CUT or COMMITTED_CUT
    part: str
    step: str  # the step it is measured from
    delay: float  # seconds after it
    moment: float  # the same moment, in seconds into the measured update
    end: float  # how long the measured update took

    def __str__(self) -> str:
        return (
            f"kill point {self.number} ({self.part}): {self.mode} {self.delay * 1000:.0f} ms after {self.step} "
            f"({self.moment:.2f} s into an update that took {self.end:.2f} s)"
        )


def kill_points(seed: int, at: dict[str, float]) -> list[KillPoint]:
    """The points of ``PARTS``, drawn from ``seed`` over the times ``at`` of a measured update. After the rename
    only its first half is drawn from: later, the update may end before the kill."""
    rng = random.Random(seed)
    points = []
    for part, begin, end, modes in PARTS:
        length = (at[end] - at[begin]) / (2 if end == "ended" else 1)
        for mode in modes:
            delay = rng.uniform(0, length)
            points.append(KillPoint(len(points), mode, part, begin, delay, at[begin] + delay, at["ended"]))
    return points


# -- a box on a file system of its own ----------------------------------------------------------------------


@dataclass
class Image:
    """An ext4 file system in a file, mounted through a loop device at ``root``."""

    file: Path
    root: Path

    def mount(self) -> None:
        checked(run("mount", "-o", "loop,noatime", self.file, self.root))

    def unmount(self) -> None:
        checked(run("umount", self.root))

    def commit_journal(self) -> None:
        """What ext4 does by itself every 5 s, and whenever a file on it is fsynced (the running daemon's catalog,
        at each change): the journal's transaction is committed, file data not yet written back is not written."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def cut_power(self) -> None:
        """Nothing more reaches the image: what was not written back yet is lost (the docstring above)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    def power_back(self) -> None:
        """The next boot's mount, of a copy of the image as the cut left it: ext4 replays its journal.

        A copy, because a mount namespace made while the box was mounted (unshare, by this test or any other
        program) keeps the old file system alive after our unmount; two of them must never share one file.
        """
        self.unmount()
        self.file = copy_image(self.file, self.file.with_name("after-the-power-cut.img"))
        self.mount()


@contextlib.contextmanager
def mounted(file: Path, root: Path) -> Iterator[Image]:
    root.mkdir(exist_ok=True)
    image = Image(file, root)
    image.mount()
    try:
        yield image
    finally:
        if os.path.ismount(root):
            image.unmount()


def make_image(file: Path, size: int, content: Path | None = None) -> Path:
    """An ext4 image of ``size`` bytes (sparse), holding what is in the folder ``content`` (owners, modes and
    links as they are). Made without mounting it: copies of it are mounted, and a mount namespace made meanwhile
    (unshare, by this test or any other program) may hold one of those after it is unmounted, never this one."""
    with file.open("wb") as f:
        f.truncate(size)
    checked(run(tool("mkfs.ext4", "e2fsprogs"), "-q", "-F", *(["-d", content] if content else []), file))
    return file


def copy_image(source: Path, to: Path) -> Path:
    checked(run("cp", "--sparse=always", source, to))
    return to


# -- the update, stopped ------------------------------------------------------------------------------------


def update_command(root: Path, bundle: Path) -> list[str]:
    """The box's own program runs the update, as ``releases.update`` does."""
    return [str(root / TOP / "bin/python"), "-I", "-m", "firmware.cli.main", "update", "--root", str(root), str(bundle)]


def live_members(group: int) -> list[int]:
    """The processes of ``group`` that have not ended (zombies aside: whoever adopted them reaps them)."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            pids.append(int(status.parent.name))
    return pids


@dataclass
class Stopped:
    killed: bool  # False: the update had ended before the moment came
    returncode: int
    progress: Progress
    stderr: str


def run_update_until(image: Image, bundle: Path, point: KillPoint) -> Stopped:
    """The box's own ``edge-recorder update``, stopped at ``point`` by a kill or a power cut."""
    root = image.root
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            update_command(root, bundle),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd="/",
            start_new_session=True,  # its own process group, with install.sh, pip and the rest
            text=True,
        )
        progress = Progress(root)
        started = time.monotonic()
        try:
            while process.poll() is None:
                now = time.monotonic() - started
                progress.poll(now)
                step_at = progress.reached(point.step)
                if step_at is not None and now >= step_at + point.delay:
                    if point.mode in (POWER_CUT, COMMITTED_CUT):
                        os.killpg(process.pid, signal.SIGSTOP)  # nothing runs on between the cut and the kill
                        if point.mode == COMMITTED_CUT:
                            image.commit_journal()
                        image.cut_power()
                    os.killpg(process.pid, signal.SIGKILL)
                    break
                time.sleep(0.001)
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while left := live_members(process.pid):
            assert time.monotonic() < deadline, f"processes of the update still running after the kill: {left}"
            time.sleep(0.01)
        stderr.seek(0)
        text = stderr.read()
    return Stopped(process.returncode == -signal.SIGKILL, process.returncode, progress, text)


# -- what a box must be after it ------------------------------------------------------------------------------


def unwhole_files(slot: Slot, *, hashed: bool) -> list[str]:
    """The files of the slot's packages that are missing or not as pip's RECORD has them: their size, and with
    ``hashed`` their sha256 too (the scripts in bin/ aside: the staged install rewrites their first line)."""
    bad = []
    for site in sorted(slot.path.glob("lib/python3*/site-packages")):
        for dist in importlib.metadata.distributions(path=[str(site)]):
            for file in dist.files or []:
                if file.hash is None or str(file).startswith(".."):
                    continue
                path = site / file
                try:
                    size = path.stat().st_size
                    if size != file.size:
                        bad.append(f"{file}: {size} bytes, not {file.size}")
                    elif hashed:
                        digest = hashlib.new(file.hash.mode, path.read_bytes()).digest()
                        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != file.hash.value:
                            bad.append(f"{file}: not as pip wrote it")
                except OSError as exc:
                    bad.append(f"{file}: {exc.strerror}")
    return bad


def units_program_version(root: Path) -> str:
    """``edge-recorder --version`` by the units' path, /opt/edge-recorder/bin/edge-recorder, chrooted into the box."""
    result = run(*chrooted(root, f"/{TOP}/bin/edge-recorder --version"), timeout=60)
    assert result.returncode == 0, f"the installed program does not run: {result.stderr}"
    return result.stdout.strip()


def assert_runs_a_whole_slot(root: Path, versions: set[str]) -> Slot:
    """``current`` names a whole slot of one of ``versions`` that runs; ``previous`` a whole one. The slot of the
    new version, which the update was writing, is checked to the last byte, the others by their files' sizes."""
    box = Layout(root)
    current = box.slot("current")
    assert current is not None, "current names no slot"
    assert current.version in versions, f"current -> slots/{current.name}, holding {current.version}"
    previous = box.slot("previous")
    assert previous is None or previous.version is not None, f"previous -> slots/{previous.name}, nothing installed"
    for slot in (current, previous):
        if slot is not None:
            bad = unwhole_files(slot, hashed=slot.version == NEW)
            assert bad == [], f"slots/{slot.name} is not whole"
    assert units_program_version(root) == f"edge-recorder {current.version}"
    for part in ("bin", "lib", "pyvenv.cfg"):
        assert os.readlink(box.top / part) == f"current/{part}"
    return current


def system_files(root: Path) -> dict[str, tuple[bytes, int] | str | None]:
    """What systemd needs to start the box, and the guard to switch back: the units, the guard, the users' and
    folders' entries (``apply.SYSTEM_FILES``) with their modes, the links that enable the units, the command on
    PATH. This update brings the same ones as the running version."""
    found: dict[str, tuple[bytes, int] | str | None] = {}
    for name in SYSTEM_FILES:
        path = root / name
        found[name] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode)) if path.exists() else None
    for link in [*sorted((root / "etc/systemd/system").rglob("*")), root / "usr/local/bin/edge-recorder"]:
        if link.is_symlink():
            found[str(link.relative_to(root))] = os.readlink(link)
    return found


def assert_system_files_kept(root: Path, before: dict[str, tuple[bytes, int] | str | None]) -> None:
    after = system_files(root)

    def said(value: tuple[bytes, int] | str | None) -> str:
        if isinstance(value, tuple):
            return f"{len(value[0])} bytes, mode {value[1]:o}"
        return "missing" if value is None else f"-> {value}"

    changed = [
        f"{name}: {said(after.get(name))} (was {said(value)})"
        for name, value in before.items()
        if after.get(name) != value
    ]
    why = "the units, the guard or their entries are not whole: systemd would not start the box"
    assert not changed, "\n".join([why, *changed])


@dataclass(frozen=True)
class BoxData:
    files: dict[str, bytes]  # the config, the update key, the spool
    rows: list[tuple]  # the catalog's recordings


def box_data(root: Path) -> BoxData:
    files = {
        str(path.relative_to(root)): path.read_bytes()
        for path in [
            root / "etc/edge-recorder/config.toml",
            root / "etc/edge-recorder/update.pub",
            *sorted((root / STATE / "spool").iterdir()),
        ]
    }
    return BoxData(files, catalog_rows(root / STATE / "catalog.sqlite3"))


def catalog_rows(catalog: Path) -> list[tuple]:
    """The recordings in the catalog, read from a copy of it (and its WAL): root opens nothing in the daemon's
    folder, where a -shm of root's would lock the daemon out."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / catalog.name
        shutil.copy2(catalog, copy)
        if catalog.with_name(catalog.name + "-wal").exists():
            shutil.copy2(catalog.with_name(catalog.name + "-wal"), copy.with_name(copy.name + "-wal"))
        db = sqlite3.connect(copy)
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            return db.execute("SELECT id, status, path FROM recordings ORDER BY id").fetchall()
        finally:
            db.close()


def assert_box_data_kept(root: Path, before: BoxData) -> None:
    after = box_data(root)
    # The daemon adds to its spool once it runs (its space reserve, recordings): what was there stays.
    kept = {name: data for name, data in after.files.items() if name in before.files}
    assert kept == before.files, "the config, the update key or the spool changed"
    assert after.rows == before.rows, "the catalog's recordings changed"
    owner = daemon_user(root)
    roots = [str(p.relative_to(root)) for p in (root / STATE).rglob("*") if p.lstat().st_uid != owner.uid]
    assert roots == [], "files in the daemon's folder that are not the daemon's"


def assert_no_update_left(root: Path) -> None:
    top = root / TOP
    assert not (top / ".update").exists(), "the staging folder is left"
    current, previous = Layout(root).slot("current"), Layout(root).slot("previous")
    kept = {slot.name for slot in (current, previous) if slot is not None}
    assert {p.name for p in (top / "slots").iterdir()} == kept, "slots other than current and previous are left"


# -- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    with work_folder("edge-recorder-interrupted-") as folder:
        yield folder


@pytest.fixture(scope="module")
def keys(work) -> Keys:
    (work / "keys").mkdir()
    return make_keys(work / "keys")


@pytest.fixture(scope="module")
def wheelhouse(work) -> Path:
    return make_wheelhouse(copy_source(work / "v1", OLD), work / "wheelhouse")


@pytest.fixture(scope="module")
def bundle(work, wheelhouse, keys) -> Path:
    made = build(copy_source(work / "v2", NEW), work / "dist", wheelhouse)
    minisign_sign(made, keys.secret)
    return made


@pytest.fixture(scope="module")
def base_image(work, wheelhouse, keys) -> Path:
    """An image of a box with 0.1.0 installed, its config, catalog, spool, a line to hear and a boot id."""
    root = work / "base"
    make_box(root, wheelhouse, keys.public, CONFIG, audio_seconds=10)
    image = make_image(work / "base.img", IMAGE_SIZE, root)
    shutil.rmtree(root)
    return image


@pytest.fixture
def point_folder(work) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(dir=work, prefix="point-"))
    folder.chmod(0o755)  # the catalog's owner reaches the catalog through it
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def measured(work, base_image, bundle) -> dict[str, float]:
    """One whole update on a copy of the box: when each step came, in seconds since it started."""
    folder = work / "measured"
    folder.mkdir(mode=0o755)
    with mounted(copy_image(base_image, folder / "box.img"), folder / "root") as image:
        progress = Progress(image.root)
        started = time.monotonic()
        process = subprocess.Popen(
            update_command(image.root, bundle), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/", text=True
        )
        while process.poll() is None:
            progress.poll(time.monotonic() - started)
            time.sleep(0.001)
        progress.seen["ended"] = time.monotonic() - started
        stderr = process.stderr.read() if process.stderr else ""
    shutil.rmtree(folder)
    assert process.returncode == 0, stderr
    missed = [name for name in NAMES if name not in progress.seen]
    assert missed == [], f"steps not seen in the measured update: {missed}"
    return progress.seen


@pytest.fixture(scope="module")
def plan(measured) -> list[KillPoint]:
    return kill_points(SEED, measured)


@contextlib.contextmanager
def described(lines: list[str]) -> Iterator[None]:
    """A failure says the seed, the kill point and what the update had done (``lines``, filled as it goes)."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError("\n".join([*lines, "", str(exc)])) from None


# -- the tests ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(work) -> Iterator[Image]:
    folder = Path(tempfile.mkdtemp(dir=work, prefix="disk-"))
    with mounted(make_image(folder / "disk.img", 64 << 20), folder / "root") as image:
        yield image
    shutil.rmtree(folder)


def test_a_simulated_power_cut_loses_what_was_not_synced(small_disk):
    """The power cut of these tests drops what was not written back, and keeps what was synced."""
    root = small_disk.root
    (root / "synced").write_text("before\n")
    checked(run("sync", "-f", root))
    (root / "synced").write_text("after\n")  # rewritten in place, not synced
    (root / "new").write_text("not synced\n")
    small_disk.cut_power()
    small_disk.power_back()
    assert (root / "synced").read_text() == "before\n"
    assert not (root / "new").exists()


def test_a_simulated_power_cut_after_a_journal_commit_keeps_names_and_loses_what_was_not_written_back(small_disk):
    """A file unlinked and written again (as install(1) replaces one) is empty after such a cut; one written beside
    the old file, synced and renamed over it (as install.sh's ``put`` does) is whole."""
    root = small_disk.root
    for name in ("installed", "renamed"):
        (root / name).write_text("before\n")
    checked(run("sync", "-f", root))
    (root / "installed").unlink()
    (root / "installed").write_text("after\n")
    (root / "renamed.new").write_text("after\n")
    checked(run("sync", root / "renamed.new"))
    (root / "renamed.new").rename(root / "renamed")
    small_disk.commit_journal()
    small_disk.cut_power()
    small_disk.power_back()
    assert (root / "installed").read_text() == ""
    assert (root / "renamed").read_text() == "after\n"


@pytest.mark.parametrize(("part", "mode"), POINTS, ids=[f"{part}-{mode}".replace(" ", "-") for part, mode in POINTS])
def test_an_update_killed_or_cut_short_at_any_point_leaves_a_box_that_starts_a_working_version(
    part, mode, plan, base_image, bundle, point_folder
):
    (point,) = [point for point in plan if (point.part, point.mode) == (part, mode)]
    lines = [f"seed {SEED} ({SEED_VARIABLE}={SEED} draws these kill points again)", str(point)]
    with mounted(copy_image(base_image, point_folder / "box.img"), point_folder / "root") as image, described(lines):
        root = image.root
        before, units = box_data(root), system_files(root)

        stopped = run_update_until(image, bundle, point)
        seen = ", ".join(f"{name} at {at:.2f} s" for name, at in stopped.progress.seen.items())
        outcome = "killed" if stopped.killed else f"ended by itself first (exit {stopped.returncode})"
        lines += [f"the update {outcome}; steps seen: {seen}", "its stderr:", stopped.stderr.rstrip()]
        if point.mode != KILL:
            image.power_back()

        # (a) current names a whole slot that runs, (b) the box's data as it was
        current = assert_runs_a_whole_slot(root, {OLD, NEW})
        lines.append(f"after the {point.mode}: current -> slots/{current.name} ({current.version})")
        assert_system_files_kept(root, units)
        assert_box_data_kept(root, before)

        # (c) the next boot runs 0.1.0: the switch, if it was recorded, is switched back (never confirmed)
        (root / BOOT_ID).write_text(f"{uuid.uuid4()}\n")
        booted = start(root, until=ready)
        lines += ["the guard at the next boot:", booted.guard.stderr.rstrip()]
        assert booted.code is None, f"the daemon did not get READY after the boot:\n{booted.log}"
        assert booted.status["firmware_version"] == OLD, booted.log
        assert Layout(root).slot("current") == Slot(OLD, root / TOP / "slots" / OLD, OLD)
        switch = read_state(Layout(root))
        if switch is not None:
            assert (switch.phase, switch.slot, switch.previous_slot) == (Phase.ROLLED_BACK, NEW, OLD), switch
        assert status_lines(root)[0].startswith(f"running:  edge-recorder {OLD} (slot {OLD})")
        assert box_data(root).rows == before.rows

        # (d) the same bundle updates the box, whatever the kill left
        again = update(root, bundle)
        assert again.returncode == 0, f"the update after the {point.mode} failed:\n{again.stderr}"
        current = assert_runs_a_whole_slot(root, {NEW})
        assert Layout(root).slot("previous") == Slot(OLD, root / TOP / "slots" / OLD, OLD)
        assert_no_update_left(root)
        assert_system_files_kept(root, units)
        pending = read_state(Layout(root))
        assert pending is not None and (pending.phase, pending.slot) == (Phase.PENDING, current.name)
        assert_box_data_kept(root, before)
