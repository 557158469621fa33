"""Rollback without a visit: an update is confirmed by the new version, or switched back by the update guard.

The box is the one tests/test_update.py makes (tests/releases.py: 0.1.0 installed by
``images/install.sh`` into an empty root, a catalog and a recording owned by the daemon's user),
updated by its own ``edge-recorder update --root`` to a 0.2.0 built from a copy of this checkout:
one as it is, one that crashes at each start after its catalog migration (a schema 8 that 0.1.0
cannot open), and one whose daemon exits 78 at start (a config only it rejects).

systemd cannot run here, so the test plays its part, step by step, with the real programs and the
real unit files: a start is the unit's ``ExecStartPre=`` (the installed
``/usr/lib/edge-recorder/update-guard start``, as root) and then its ``ExecStart=`` (the installed
``/opt/edge-recorder/bin/edge-recorder run --config /etc/edge-recorder/config.toml``, as the daemon's
user, in /run/edge-recorder). Both run chrooted into the box: in a private mount namespace the box's
/etc, /opt, /var and /run are bound into a throwaway root, with the box's /usr laid over the
machine's (overlayfs) so that the guard is where the unit names it. Whether systemd would restart the
service after an exit, or leave it failed and start ``edge-recorder-rollback.service``, is read from
the installed unit (``Restart=on-failure``, ``RestartPreventExitStatus=``); that unit's step is
``update-guard failed`` with the ``MONITOR_*`` variables systemd gives an ``OnFailure=`` unit. A rollback on
request (``update-guard rollback``, what the Mender module's ArtifactRollback runs; tests/test_mender.py runs it
under Mender) is the installed guard too, with the daemon stopped as the module stops it.

The box's config turns the simulator on (``[sim]``: a tone in a WAV file instead of the sound card)
and confirms after ``[update] confirm_seconds = 2``. The box's boot id is its
``/proc/sys/kernel/random/boot_id``, which in the box's root is a plain file the test writes, bound
over /proc in the chroot: a reboot is a new id there. Needs root (chroot, mounts).
"""

from __future__ import annotations

import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.cli import exits
from firmware.cli.checks import Status
from firmware.cli.doctor import check_version
from firmware.update.slots import Layout
from firmware.update.state import Confirmed, Phase, UpdateState, read_state

from .box_chroot import (
    BOOT_ID,
    NOTE,
    Start,
    confirmed,
    daemon_user,
    guard,
    make_box,
    ready,
    start,
    status_lines,
    work_folder,
)
from .programs import run
from .releases import (
    AS_ROOT,
    STATE,
    TOP,
    Keys,
    build,
    checked,
    copy_source,
    layout,
    make_keys,
    make_wheelhouse,
    minisign_sign,
    update,
)

pytestmark = pytest.mark.skipif(not AS_ROOT, reason="the unit's steps run chrooted, with mounts: root only")

CONFIG = """\
[device]
id = "front-desk-3"

[sim]
enabled = true
audio = "/var/lib/edge-recorder/line.wav"

[update]
confirm_seconds = 2
"""
UNIT = "usr/lib/systemd/system/edge-recorder.service"

# What the misbehaving releases change in this checkout's code.
MIGRATES = (
    '    UPDATE uploads SET clock_synced = 1 WHERE state = \'done\';\n    """,\n)\n',
    '    UPDATE uploads SET clock_synced = 1 WHERE state = \'done\';\n    """,\n'
    "    # 8: who reviewed a recording (a column added: the catalog rule)\n"
    '    """\n    ALTER TABLE recordings ADD COLUMN reviewed_by TEXT;\n    """,\n)\n',
)
CRASHES = (
    "    def run(self) -> int:\n",
    '    def run(self) -> int:\n        raise RuntimeError("a release that crashes at each start")\n',
)
REJECTS = (
    "def run(args: argparse.Namespace) -> int:\n",
    "def run(args: argparse.Namespace) -> int:\n"
    '    return exits.fail(exits.CONFIG, "[audio] capture: a setting only this release rejects")\n',
)


@dataclass
class Releases:
    healthy: Path  # 0.2.0 as this checkout is
    crashing: Path  # 0.2.0 that migrates the catalog to schema 8, then crashes at each start
    rejecting: Path  # 0.2.0 whose daemon exits 78 (EX_CONFIG) at each start


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    with work_folder("edge-recorder-rollback-") as folder:
        yield folder


@pytest.fixture(scope="module")
def wheelhouse(work) -> Path:
    return make_wheelhouse(copy_source(work / "v1", "0.1.0"), work / "wheelhouse")


@pytest.fixture(scope="module")
def releases(work, wheelhouse, keys) -> Releases:
    def release(name: str, changes: dict[str, tuple[str, str]]) -> Path:
        bundle = build(copy_source(work / name, "0.2.0", changes), work / f"dist-{name}", wheelhouse)
        minisign_sign(bundle, keys.secret)
        return bundle

    return Releases(
        healthy=release("healthy", {}),
        crashing=release("crashing", {"firmware/catalog.py": MIGRATES, "firmware/daemon/app.py": CRASHES}),
        rejecting=release("rejecting", {"firmware/cli/run.py": REJECTS}),
    )


@pytest.fixture(scope="module")
def base(work, wheelhouse, keys) -> Path:
    """0.1.0 installed, with the box's config, catalog, spool, a line to hear, and a boot id."""
    root = work / "base"
    make_box(root, wheelhouse, keys.public, CONFIG, audio_seconds=60)
    return root


@pytest.fixture(scope="module")
def switched(work, base, releases) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The box updated to the healthy 0.2.0, not started yet: the switch is pending."""
    root = copy_box(base, work / "switched")
    return root, checked(update(root, releases.healthy))


@pytest.fixture
def box(work) -> Iterator[Callable[[Path], Path]]:
    """Copies of a box for a test of its own, removed after it."""
    made = []

    def copy(source: Path) -> Path:
        folder = Path(tempfile.mkdtemp(dir=work, prefix="box-"))
        folder.chmod(0o755)  # the catalog's owner reaches the catalog through it
        made.append(copy_box(source, folder / "root"))
        return made[-1]

    yield copy
    for root in made:
        checked(run("rm", "-rf", root.parent))


def copy_box(source: Path, to: Path) -> Path:
    checked(run("cp", "-a", source, to))
    return to


def systemd_after(root: Path, code: int) -> str:
    """What systemd does after the daemon exits with ``code``, by the installed unit: "restart" (Restart=
    on-failure), "failed" (RestartPreventExitStatus=: the unit fails and its OnFailure= unit starts) or
    "stopped"."""
    settings = {}
    for line in (root / UNIT).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key, value)
    assert settings["Restart"] == "on-failure" and settings["OnFailure"] == "edge-recorder-rollback.service"
    if code == 0:
        return "stopped"
    return "failed" if str(code) in settings["RestartPreventExitStatus"].split() else "restart"


def the_state(root: Path) -> UpdateState:
    found = read_state(Layout(root))
    assert found is not None
    return found


def schema(catalog: Path) -> int:
    db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


# -- no update pending -----------------------------------------------------------------------------------


def test_the_guard_leaves_a_box_alone_that_was_installed_once(base, box):
    root = box(base)
    before = layout(root)
    assert guard(root, "start").returncode == 0
    assert guard(root, "failed").returncode == 1  # nothing to take back: the rollback unit restarts nothing
    assert layout(root) == before
    assert not (root / TOP / "update.state").exists()
    assert status_lines(root) == [
        "running:  edge-recorder 0.1.0 (slot 0.1.0), installed without an update",
        "previous: none kept",
    ]


# -- the update is recorded as pending -------------------------------------------------------------------


def test_the_switch_is_pending_until_the_new_version_confirms_it(switched):
    root, result = switched
    pending = the_state(root)
    assert (pending.phase, pending.slot, pending.version, pending.previous_slot) == (
        Phase.PENDING,
        "0.2.0",
        "0.2.0",
        "0.1.0",
    )
    assert pending.boot_id == (root / BOOT_ID).read_text().strip()
    assert pending.starts == 0 and pending.confirmation == "/" + NOTE
    assert (pending.catalog, pending.catalog_copy) == ("/var/lib/edge-recorder/catalog.sqlite3", "")
    assert (
        "edge-recorder update: pending: edge-recorder 0.2.0 confirms the update once it has recorded healthily "
        "for 2 s ([update] confirm_seconds); a crash loop, a failed start or a reboot before then switches back "
        "to edge-recorder 0.1.0\n"
    ) in result.stderr
    assert (root / TOP / "update.state").stat().st_mode & 0o777 == 0o644
    lines = status_lines(root)
    assert lines[0].startswith("running:  edge-recorder 0.2.0 (slot 0.2.0), not confirmed yet: switched at ")
    assert lines[0].endswith(", 0 starts so far; a crash loop, a failed start or a reboot before it is confirmed "
                             "switches back to slot 0.1.0")  # fmt: skip
    assert lines[1] == "previous: edge-recorder 0.1.0 (slot 0.1.0)"


def test_another_update_waits_until_the_last_one_is_confirmed(switched, releases, box):
    root = box(switched[0])
    before = layout(root)
    result = update(root, releases.healthy, "--force")
    assert result.returncode == exits.UNAVAILABLE
    assert result.stderr.splitlines()[-1] == (
        "edge-recorder: error: update refused: the last update, to edge-recorder 0.2.0, is not confirmed yet: it is "
        "once that version has recorded healthily for [update] confirm_seconds, or it is switched back "
        "(edge-recorder update --status); update then"
    )
    assert layout(root) == before


# -- confirmed -------------------------------------------------------------------------------------------


def test_a_healthy_new_version_confirms_itself_and_a_reboot_then_keeps_it(switched, box):
    root = box(switched[0])
    first = start(root, until=confirmed, timeout=60)
    assert first.code is None, first.log  # it was running until the test stopped it
    assert "edge-recorder 0.2.0 is not confirmed yet: start 1 of 3" in first.guard.stderr
    assert "update: edge-recorder 0.2.0 confirmed after 2 s of healthy recording" in first.log
    note = Confirmed.parse((root / NOTE).read_text())
    assert note is not None and (note.id, note.slot, note.version) == (the_state(root).id, "0.2.0", "0.2.0")
    assert note.seconds >= 2
    assert (root / NOTE).stat().st_uid == daemon_user(root).uid  # the daemon wrote it, where it may write
    assert status_lines(root)[0] == f"running:  edge-recorder 0.2.0 (slot 0.2.0), confirmed at {note.at}"

    # The next start records it; a reboot after that changes nothing.
    second = start(root, until=ready)
    assert "edge-recorder 0.2.0 (slots/0.2.0) is confirmed" in second.guard.stderr
    assert not (root / NOTE).exists()
    assert the_state(root).phase is Phase.CONFIRMED
    (root / BOOT_ID).write_text(f"{uuid.uuid4()}\n")
    third = start(root, until=ready)
    assert third.guard.stderr == ""
    assert third.status["firmware_version"] == "0.2.0"
    assert layout(root)["links"]["current"] == "slots/0.2.0"
    assert the_state(root).phase is Phase.CONFIRMED
    # A later failure of a confirmed version is not an update's: the rollback unit restarts nothing.
    assert guard(root, "failed", MONITOR_SERVICE_RESULT="exit-code", MONITOR_EXIT_STATUS="1").returncode == 1
    assert layout(root)["links"]["current"] == "slots/0.2.0"
    check = check_version(root)
    assert check is not None and check.status is Status.PASS, check
    assert check.detail.endswith("; previous: edge-recorder 0.1.0 (slot 0.1.0)")


# -- rolled back -----------------------------------------------------------------------------------------


def test_a_reboot_before_the_new_version_is_confirmed_switches_back(switched, box):
    root = box(switched[0])
    config = root / "etc/edge-recorder/config.toml"
    config.write_text(config.read_text().replace("confirm_seconds = 2", "confirm_seconds = 600"))
    first = start(root, until=ready)
    assert first.status["firmware_version"] == "0.2.0"
    assert the_state(root).phase is Phase.PENDING

    (root / BOOT_ID).write_text(f"{uuid.uuid4()}\n")  # the box restarts
    after = start(root, until=ready)
    assert (
        "switched back from slots/0.2.0 (edge-recorder 0.2.0) to slots/0.1.0: "
        "the box restarted before edge-recorder 0.2.0 was confirmed"
    ) in after.guard.stderr
    assert after.status["firmware_version"] == "0.1.0", after.log
    assert layout(root)["links"] == {
        "current": "slots/0.1.0",
        "previous": "slots/0.2.0",  # kept, to look at or to switch to by hand
        "bin": "current/bin",
        "lib": "current/lib",
        "pyvenv.cfg": "current/pyvenv.cfg",
    }
    back = the_state(root)
    assert (back.phase, back.reason) == (Phase.ROLLED_BACK, "reboot")
    assert status_lines(root)[0].startswith("running:  edge-recorder 0.1.0 (slot 0.1.0), switched back at ")
    assert status_lines(root)[0].endswith(" from edge-recorder 0.2.0: the box restarted before it was confirmed")
    check = check_version(root)
    assert check is not None and check.status is Status.WARN and "switched back" in check.detail, check
    # Switched back once: the next starts and reboots leave 0.1.0 running.
    (root / BOOT_ID).write_text(f"{uuid.uuid4()}\n")
    assert guard(root, "start").stderr == ""
    assert layout(root)["links"]["current"] == "slots/0.1.0"


@dataclass
class CrashLoop:
    root: Path
    starts: list[Start]  # the new version's, each ended by a crash
    catalog_copy: str  # what the switch recorded to put back
    last: Start  # the start that switched back


@pytest.fixture(scope="module")
def crash_loop(work, base, releases) -> CrashLoop:
    """The crashing 0.2.0 updated to and started as systemd would: it crashes, Restart= starts it again."""
    root = copy_box(base, work / "crash-loop")
    checked(update(root, releases.crashing))
    copy = the_state(root).catalog_copy
    starts = []
    while len(starts) < 10:  # systemd's StartLimitBurst=
        started = start(root, until=ready)
        if started.code is None:
            return CrashLoop(root, starts, copy, started)
        assert systemd_after(root, started.code) == "restart", started.log
        starts.append(started)
    raise AssertionError("still crashing after 10 starts")


def test_a_version_that_crashes_at_each_start_is_switched_back_at_the_fourth(crash_loop):
    assert len(crash_loop.starts) == 3
    for number, crashed in enumerate(crash_loop.starts, start=1):
        assert f"edge-recorder 0.2.0 is not confirmed yet: start {number} of 3" in crashed.guard.stderr
        assert "RuntimeError: a release that crashes at each start" in crashed.log
        assert crashed.code == exits.SOFTWARE
    assert (
        "switched back from slots/0.2.0 (edge-recorder 0.2.0) to slots/0.1.0: "
        "edge-recorder 0.2.0 did not stay up: 3 starts without being confirmed"
    ) in crash_loop.last.guard.stderr
    back = the_state(crash_loop.root)
    assert (back.phase, back.reason, back.starts) == (Phase.ROLLED_BACK, "crash-loop", 3)
    assert layout(crash_loop.root)["links"]["current"] == "slots/0.1.0"


def test_the_start_that_switches_back_runs_the_previous_version(crash_loop):
    assert crash_loop.last.status["firmware_version"] == "0.1.0", crash_loop.last.log
    assert crash_loop.last.status["phase"] == "ready"
    assert "edge-recorder 0.1.0 starting" in crash_loop.last.log


def test_the_catalog_is_put_back_when_the_new_version_migrated_it(crash_loop):
    state_dir = crash_loop.root / STATE
    assert crash_loop.catalog_copy == "/var/lib/edge-recorder/catalog.sqlite3.before-0.2.0"
    assert schema(state_dir / "catalog.sqlite3") == 7  # what 0.1.0 writes, and opened
    db = sqlite3.connect(state_dir / "catalog.sqlite3")
    assert db.execute("SELECT id, status FROM recordings").fetchall() == [("RE1", "completed")]
    db.close()
    # The catalog 0.2.0 migrated is kept beside it, with its WAL if it left one.
    assert schema(state_dir / "catalog.sqlite3.rolled-back-0.2.0") == 8
    owner = daemon_user(crash_loop.root)
    strangers = [p.name for p in state_dir.rglob("*") if (p.stat().st_uid, p.stat().st_gid) != (owner.uid, owner.gid)]
    assert strangers == []  # put back as the catalog's owner: nothing there is root's
    assert the_state(crash_loop.root).catalog_copy == ""  # done: a rollback cut short does not do it twice


def test_a_failed_start_switches_back_and_restarts(base, releases, box):
    root = box(base)
    checked(update(root, releases.rejecting))
    assert the_state(root).catalog_copy == ""  # the same schema: the catalog stays as the new version leaves it
    catalog = (root / STATE / "catalog.sqlite3").stat()

    first = start(root, until=ready)
    assert first.code == exits.CONFIG and "a setting only this release rejects" in first.log
    assert systemd_after(root, first.code) == "failed"
    # edge-recorder-rollback.service (OnFailure=): its ExecCondition= is the guard, 0 means restart.
    rollback = guard(root, "failed", MONITOR_SERVICE_RESULT="exit-code", MONITOR_EXIT_STATUS="78")
    assert rollback.returncode == 0, rollback.stderr
    assert (
        "switched back from slots/0.2.0 (edge-recorder 0.2.0) to slots/0.1.0: edge-recorder.service failed "
        "(exit-code, exit status 78) before edge-recorder 0.2.0 was confirmed"
    ) in rollback.stderr
    restarted = start(root, until=ready)
    assert restarted.status["firmware_version"] == "0.1.0", restarted.log
    back = the_state(root)
    assert (back.phase, back.reason) == (Phase.ROLLED_BACK, "failed-start")
    after = (root / STATE / "catalog.sqlite3").stat()
    assert after.st_ino == catalog.st_ino
    assert not list((root / STATE).glob("*.rolled-back-*"))
    # The previous version failing later is not an update's failure: nothing more is switched.
    assert guard(root, "failed", MONITOR_SERVICE_RESULT="exit-code", MONITOR_EXIT_STATUS="78").returncode == 1
    assert layout(root)["links"]["current"] == "slots/0.1.0"


def test_a_rollback_cut_short_is_finished_by_the_next_start(switched, box):
    """A power cut after the guard wrote rolling-back, before it switched: the next start finishes it."""
    root = box(switched[0])
    state_file = root / TOP / "update.state"
    text = state_file.read_text()
    detail = "the box restarted before edge-recorder 0.2.0 was confirmed"
    state_file.write_text(
        text.replace("STATE=pending\n", "STATE=rolling-back\n")
        .replace("REASON=\n", "REASON=reboot\n")
        .replace("DETAIL=\n", f"DETAIL={detail}\n")
    )
    assert layout(root)["links"]["current"] == "slots/0.2.0"
    finished = guard(root, "start")
    assert f"switched back from slots/0.2.0 (edge-recorder 0.2.0) to slots/0.1.0: {detail}" in finished.stderr
    assert layout(root)["links"]["current"] == "slots/0.1.0"
    back = the_state(root)
    assert (back.phase, back.reason, back.detail) == (Phase.ROLLED_BACK, "reboot", detail)
    assert sorted(p.name for p in (root / TOP).iterdir() if not p.is_symlink()) == [
        "slots",
        "update.history",
        "update.state",
    ]


# -- switched back on request (update-guard rollback: the Mender module's ArtifactRollback) ---------------


def test_a_rollback_on_request_switches_back_a_pending_update_and_a_second_one_changes_nothing(switched, box):
    root = box(switched[0])
    first = guard(root, "rollback")
    assert first.returncode == 0, first.stderr
    assert (
        "switched back from slots/0.2.0 (edge-recorder 0.2.0) to slots/0.1.0: "
        "edge-recorder 0.2.0 was switched back on request"
    ) in first.stderr
    assert layout(root)["links"]["current"] == "slots/0.1.0"
    assert layout(root)["links"]["previous"] == "slots/0.2.0"
    back = the_state(root)
    assert (back.phase, back.reason) == (Phase.ROLLED_BACK, "requested")
    recorded = (root / TOP / "update.state").read_text()

    again = guard(root, "rollback")
    assert again.returncode == 0, again.stderr
    assert (
        "the switch to slots/0.2.0 (edge-recorder 0.2.0) was switched back already (requested): nothing to take back"
    ) in again.stderr
    assert (root / TOP / "update.state").read_text() == recorded
    assert layout(root)["links"]["current"] == "slots/0.1.0"
    assert guard(root, "start").stderr == ""  # the next start runs 0.1.0 and changes nothing


def test_a_confirmed_update_is_switched_back_on_request_and_the_previous_version_runs(switched, box):
    root = box(switched[0])
    first = start(root, until=confirmed)  # the daemon confirms; the guard has not recorded it yet
    assert first.status["firmware_version"] == "0.2.0", first.log
    detail = "Mender rolled back the deployment of edge-recorder-0.2.0 (edge-recorder 0.2.0)"
    rollback = guard(root, f"rollback '{detail}'")
    assert rollback.returncode == 0, rollback.stderr
    assert "edge-recorder 0.2.0 (slots/0.2.0) is confirmed" in rollback.stderr  # its note, recorded first
    assert f"switched back from slots/0.2.0 (edge-recorder 0.2.0) to slots/0.1.0: {detail}" in rollback.stderr
    assert not (root / NOTE).exists()
    back = the_state(root)
    assert (back.phase, back.reason, back.detail) == (Phase.ROLLED_BACK, "requested", detail)

    after = start(root, until=ready)
    assert after.guard.stderr == ""
    assert after.status["firmware_version"] == "0.1.0", after.log
    lines = status_lines(root)
    assert lines[0].startswith("running:  edge-recorder 0.1.0 (slot 0.1.0), switched back at ")
    assert lines[0].endswith(
        " from edge-recorder 0.2.0: it was switched back on request (Mender's rollback, or update-guard rollback)"
    )
    assert lines[1] == f"why:      {detail}"


def test_a_rollback_on_request_with_no_switch_recorded_takes_nothing_back(base, box):
    root = box(base)
    before = layout(root)
    result = guard(root, "rollback")
    assert result.returncode == 0, result.stderr
    assert "no switch recorded in /opt/edge-recorder: nothing to take back" in result.stderr
    assert layout(root) == before
    assert not (root / TOP / "update.state").exists()
    wrong = guard(root, "rollback one two")  # DETAIL is one argument
    assert wrong.returncode == exits.USAGE
    assert "update-guard [--root DIR] rollback [DETAIL]" in wrong.stderr


def test_a_rollback_on_request_without_the_previous_slot_fails_and_keeps_the_new_version(switched, box):
    root = box(switched[0])
    checked(run("rm", "-rf", root / TOP / "slots/0.1.0"))
    result = guard(root, "rollback")
    assert result.returncode == 1
    assert ("cannot switch back from slots/0.2.0: slots/0.1.0 is not there; edge-recorder 0.2.0 stays") in result.stderr
    assert layout(root)["links"]["current"] == "slots/0.2.0"
    assert the_state(root).phase is Phase.PENDING
