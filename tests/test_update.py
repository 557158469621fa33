"""``edge-recorder update``: signed release bundles onto a box, each version in a slot of its own.

Everything is real: the bundles are built by ``python -m firmware.update.build`` from copies of
this checkout (the copy for 0.2.0 and 0.3.0 only has its version changed), from a wheelhouse that
``pip wheel`` makes once, and signed with Debian's ``minisign``; the box is a root file system
that ``images/install.sh`` installs 0.1.0 into, as tests/test_install.py does, with a config, a
catalog (``firmware.catalog``, owned by a user other than root, as the daemon's is) and a
recording in the spool (tests/releases.py makes both). The installed program runs the update, as
on a box, with ``--root``. The update to 0.2.0 is then confirmed as its daemon would confirm it
(tests/test_rollback.py runs the daemon for that, and what happens when it does not).

The module's box is updated to 0.2.0 once; every refusal then runs against it and must leave it
as it was: ``current``, ``previous``, the slots, the config, the catalog, the spool. Tests that
change a box work on a copy. A full card is a size-capped tmpfs in a mount namespace of its own
(``unshare``, as tests/test_full_card.py does; root only, like the chroot that runs
``/opt/edge-recorder/bin/edge-recorder`` at its real path).

The box lives under /var/tmp rather than pytest's temporary folder: the catalog's copy is made
by the catalog's owner, who must be able to reach the files, and pytest's folder is private to
root.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.cli import exits
from firmware.update import history
from firmware.update.history import new_id
from firmware.update.inbox import Request, put
from firmware.update.slots import Layout

from .programs import run, tool
from .releases import (
    AS_ROOT,
    PATH,
    PYTHON,
    STATE,
    TOP,
    Keys,
    build,
    checked,
    confirm,
    copy_source,
    install_box,
    layout,
    make_keys,
    make_state,
    make_wheelhouse,
    minisign_sign,
    state,
    update,
)

DAEMON_UID = 64123  # the catalog's owner: a user that is not root, as edge-recorder on a box
CONFIG = '[device]\nid = "front-desk-3"\n'


@dataclass
class Releases:
    wheelhouse: Path
    v1: Path  # 0.1.0, signed by the project's own signing path (build --sign)
    v2: Path  # 0.2.0, signed with minisign -S
    v3: Path  # 0.3.0, signed with minisign -S
    aarch64: Path  # 0.3.0 for a Pi, signed with minisign -S
    work: Path


@dataclass
class Box:
    root: Path
    update: subprocess.CompletedProcess[str]  # 0.1.0 -> 0.2.0
    state_before: dict[str, bytes]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def releases(tmp_path_factory, keys) -> Releases:
    work = tmp_path_factory.mktemp("releases")
    v1_source = copy_source(work / "v1", "0.1.0")
    wheelhouse = make_wheelhouse(v1_source, work / "wheelhouse")
    v1 = build(v1_source, work / "dist", wheelhouse, "--sign", keys.secret)
    v2 = build(copy_source(work / "v2", "0.2.0"), work / "dist", wheelhouse)
    v3_source = copy_source(work / "v3", "0.3.0")
    v3 = build(v3_source, work / "dist", wheelhouse)
    # A Pi's bundle, from a wheelhouse of aarch64 wheels: here only the pure-Python ones (numpy and
    # the rest are built on an arm64 machine); the box refuses it before it would need them.
    pi_wheels = work / "pi-wheelhouse"
    pi_wheels.mkdir()
    for wheel in wheelhouse.glob("*-none-any.whl"):
        shutil.copy2(wheel, pi_wheels)
    aarch64 = build(v3_source, work / "dist-aarch64", pi_wheels, "--arch", "aarch64")
    for bundle in (v2, v3, aarch64):
        minisign_sign(bundle, keys.secret)
    return Releases(wheelhouse, v1, v2, v3, aarch64, work)


@pytest.fixture(scope="module")
def box(releases, keys) -> Iterator[Box]:
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="edge-recorder-update-") as folder:
        os.chmod(folder, 0o755)
        root = Path(folder) / "root"
        root.mkdir()
        install_box(root, releases.wheelhouse, keys.public)
        (root / "etc/edge-recorder/config.toml").write_text(CONFIG)  # the box's own, provisioned
        make_state(root / STATE, DAEMON_UID, DAEMON_UID)
        before = state(root)
        result = update(root, releases.v2)
        if result.returncode == 0:
            confirm(root, DAEMON_UID, DAEMON_UID)  # 0.2.0 ran healthy: the next update may come
        yield Box(root, result, before)


@pytest.fixture
def scratch(box) -> Iterator[Path]:
    """A folder beside the module's box, reachable by the catalog's owner (unlike tmp_path)."""
    folder = Path(tempfile.mkdtemp(dir=box.root.parent, prefix="scratch-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder)


def copy_box(box: Box, scratch: Path) -> Path:
    """A box of its own for a test that changes it (cp -a: owners and links as they are)."""
    checked(run("cp", "-a", box.root, scratch / "root"))
    return scratch / "root"


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line, last on stderr; nothing like a traceback before it."""
    lines = result.stderr.splitlines()
    assert lines, result
    errors = [line for line in lines if line.startswith("edge-recorder: error:")]
    assert errors == [lines[-1]], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == "", result.stdout
    return lines[-1].removeprefix("edge-recorder: error: update refused: ")


def assert_untouched(box: Box, root: Path | None = None) -> None:
    root = root or box.root
    assert layout(root) == {
        "links": {
            "current": "slots/0.2.0",
            "previous": "slots/0.1.0",
            "bin": "current/bin",
            "lib": "current/lib",
            "pyvenv.cfg": "current/pyvenv.cfg",
        },
        "others": ["slots", "update.history", "update.state"],  # no staging folder left behind
        "slots": ["0.1.0", "0.2.0"],
    }
    assert state(root) == box.state_before


# -- the update ---------------------------------------------------------------------------------------------


def test_an_update_switches_to_the_new_slot_and_keeps_the_previous_one(box):
    assert box.update.returncode == 0, box.update.stderr
    assert box.update.stdout == "edge-recorder 0.2.0 is current (slot 0.2.0); previous: 0.1.0\n"
    assert_untouched(box)
    program = box.root / TOP / "bin/edge-recorder"
    assert program.read_text().startswith("#!/opt/edge-recorder/slots/0.2.0/bin/python\n")
    version = run(box.root / TOP / "bin/python", "-I", "-m", "firmware.cli.main", "--version")
    assert version.stdout == "edge-recorder 0.2.0\n", version.stderr
    # The previous slot is whole: its own interpreter still runs its own version.
    old = run(box.root / TOP / "slots/0.1.0/bin/python", "-I", "-m", "firmware.cli.main", "--version")
    assert old.stdout == "edge-recorder 0.1.0\n", old.stderr
    # The slot keeps what it was installed from, for going back to it later.
    manifest = (box.root / TOP / "slots/0.2.0/manifest.json").read_text()
    assert '"version": "0.2.0"' in manifest and '"architecture": "x86_64"' in manifest


def test_the_update_says_what_it_checked_and_what_it_would_restart(box):
    err = box.update.stderr
    assert "edge-recorder-0.2.0-x86_64.tar: signed by the key in /etc/edge-recorder/update.pub" in err
    assert f"edge-recorder 0.2.0: {box.root}/etc/edge-recorder/config.toml: ok" in err
    assert "edge-recorder 0.2.0: catalog: schema 7 -> 7, integrity ok (on a copy)" in err
    assert "current -> slots/0.2.0 (edge-recorder 0.2.0), previous -> slots/0.1.0" in err
    assert "would restart edge-recorder.service (the root is not this machine's)" in err


def test_the_catalog_is_kept_as_it_was_before_the_switch_owned_by_the_daemon(box):
    state_dir = box.root / STATE
    kept = state_dir / "catalog.sqlite3.before-0.2.0"
    db = sqlite3.connect(kept)
    assert db.execute("SELECT id, status FROM recordings").fetchall() == [("RE1", "completed")]
    assert db.execute("PRAGMA user_version").fetchone()[0] == 7
    db.close()
    st = kept.stat()
    assert st.st_mode & 0o777 == 0o640
    if AS_ROOT:
        assert (st.st_uid, st.st_gid) == (DAEMON_UID, DAEMON_UID)
        # Nothing in the daemon's folder is root's now: no -wal or -shm that would lock it out.
        assert [p.name for p in state_dir.rglob("*") if p.stat().st_uid != DAEMON_UID] == []
    assert sorted(p.name for p in state_dir.iterdir()) == ["catalog.sqlite3", "catalog.sqlite3.before-0.2.0", "spool"]


def test_the_installed_program_runs_the_new_version_at_opt_edge_recorder(box, tmp_path):
    """/opt/edge-recorder/bin/edge-recorder, the units' program, at its real path: chrooted."""
    if not AS_ROOT:
        pytest.skip("chroot and bind mounts need root")
    jail = tmp_path / "jail"
    for name in ("usr", TOP, "tmp"):
        (jail / name).mkdir(parents=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        (jail / name).symlink_to(f"usr/{name}")
    shutil.copytree(box.root / "etc", jail / "etc", symlinks=True)
    script = (
        f"set -e; mount --make-rprivate /; mount --rbind /usr {jail}/usr; "
        f"mount --bind {box.root}/{TOP} {jail}/{TOP}; mount --bind {box.root}/usr/local/bin {jail}/usr/local/bin; "
        f"chroot {jail} env PATH={PATH} sh -ec '/{TOP}/bin/edge-recorder --version; edge-recorder --version'"
    )
    result = run(tool("unshare", "util-linux"), "--mount", "--fork", "sh", "-c", script, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "edge-recorder 0.2.0\nedge-recorder 0.2.0\n"


def test_a_signature_made_by_the_build_verifies_with_the_minisign_tool(releases, keys):
    result = run(tool("minisign", "minisign"), "-V", "-m", releases.v1, "-p", keys.public)
    assert result.returncode == 0, result.stderr
    assert "Signature and comment signature verified" in result.stdout
    assert f"file:{releases.v1.name}\thashed" in result.stdout


def test_the_bundle_holds_the_wheels_the_units_the_installer_and_a_manifest(releases):
    with tarfile.open(releases.v2) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json"
    assert "images/install.sh" in names and "systemd/edge-recorder.service" in names
    wheels = {name.split("/")[1].split("-")[0] for name in names if name.startswith("wheels/")}
    assert {"edge_recorder", "numpy", "pyalsaaudio", "py_minisign", "cryptography"} <= wheels


# -- refusals: one line, nothing switched ----------------------------------------------------------------


def tampered_tar(bundle: Path, to: Path, member_prefix: str) -> Path:
    """A copy of ``bundle`` with one byte of the first member named ``member_prefix...`` changed."""
    shutil.copy2(bundle, to)
    with tarfile.open(to) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith(member_prefix))
    with to.open("r+b") as f:
        f.seek(member.offset_data + member.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    return to


def test_a_bundle_signed_with_another_key_is_refused(box, releases, keys, tmp_path):
    bundle = shutil.copy2(releases.v3, tmp_path / releases.v3.name)
    minisign_sign(bundle, keys.stranger)
    result = update(box.root, bundle)
    assert result.returncode == exits.DATAERR
    assert refusal(result) == (
        "edge-recorder-0.3.0-x86_64.tar is not signed by the key in update.pub (incompatible key identifiers)"
    )
    assert_untouched(box)


def test_a_tampered_file_breaks_the_signature_and_is_refused(box, releases, tmp_path):
    bundle = tampered_tar(releases.v3, tmp_path / releases.v3.name, "wheels/numpy")
    shutil.copy2(str(releases.v3) + ".minisig", str(bundle) + ".minisig")
    result = update(box.root, bundle)
    assert result.returncode == exits.DATAERR
    assert refusal(result) == (
        "edge-recorder-0.3.0-x86_64.tar is not signed by the key in update.pub (signature verification failed)"
    )
    assert_untouched(box)


def test_a_tampered_file_signed_anew_is_caught_by_the_manifest(box, releases, keys, tmp_path):
    """A bundle changed after it was built and signed again (a bad build, a misused key): each
    file is checked against its sha256 in the manifest."""
    bundle = tampered_tar(releases.v3, tmp_path / releases.v3.name, "wheels/edge_recorder")
    minisign_sign(bundle, keys.secret)
    result = update(box.root, bundle)
    assert result.returncode == exits.DATAERR
    message = refusal(result)
    assert message.startswith("edge-recorder-0.3.0-x86_64.tar: wheels/edge_recorder-0.3.0-py3-none-any.whl")
    assert message.endswith("does not match its sha256 in the manifest (tampered)")
    assert_untouched(box)


def test_a_bundle_for_another_architecture_is_refused(box, releases):
    result = update(box.root, releases.aarch64)
    assert result.returncode == exits.DATAERR
    assert refusal(result) == "the bundle is built for aarch64; this box is x86_64"
    assert_untouched(box)


def test_an_older_version_is_refused_without_force(box, releases):
    result = update(box.root, releases.v1)
    assert result.returncode == exits.DATAERR
    assert refusal(result) == "edge-recorder 0.1.0 is not newer than the running 0.2.0 (--force installs it anyway)"
    assert_untouched(box)


def test_a_truncated_bundle_is_refused(box, releases, tmp_path):
    bundle = tmp_path / releases.v3.name
    size = releases.v3.stat().st_size // 2 + 100  # an interrupted copy
    with releases.v3.open("rb") as src:
        bundle.write_bytes(src.read(size))
    shutil.copy2(str(releases.v3) + ".minisig", str(bundle) + ".minisig")
    result = update(box.root, bundle)
    assert result.returncode == exits.DATAERR
    assert refusal(result) == (
        f"edge-recorder-0.3.0-x86_64.tar is truncated ({size} bytes, and no tar end): copy or download it again"
    )
    assert_untouched(box)


def test_a_bundle_without_its_signature_is_refused(box, releases, tmp_path):
    bundle = shutil.copy2(releases.v3, tmp_path / releases.v3.name)
    result = update(box.root, bundle)
    assert result.returncode == exits.NOINPUT
    assert refusal(result) == (
        "no signature edge-recorder-0.3.0-x86_64.tar.minisig beside edge-recorder-0.3.0-x86_64.tar "
        "(minisign -Sm edge-recorder-0.3.0-x86_64.tar makes it)"
    )
    assert_untouched(box)


def test_a_box_without_an_update_key_refuses_every_bundle(box, releases):
    key = box.root / "etc/edge-recorder/update.pub"
    aside = key.with_name("update.pub.aside")
    key.rename(aside)
    try:
        result = update(box.root, releases.v3)
    finally:
        aside.rename(key)
    assert result.returncode == exits.CONFIG
    assert refusal(result).startswith(f"no update key at {key}: the box takes only bundles signed with it")
    assert_untouched(box)


def test_a_second_update_while_one_runs_is_refused(box, releases):
    fd = os.open(box.root / TOP, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = update(box.root, releases.v3)
    finally:
        os.close(fd)
    assert result.returncode == exits.UNAVAILABLE
    assert refusal(result) == f"another update of {box.root / TOP} is running"
    assert_untouched(box)


def full_card_update(box: Box, scratch: Path, bundle: Path, spare: int) -> tuple[subprocess.CompletedProcess[str], str]:
    """The box with its /opt on a tmpfs that has ``spare`` bytes left, updated there; returns the
    result and what /opt/edge-recorder holds afterwards (a listing: the tmpfs goes with the namespace)."""
    if not AS_ROOT:
        pytest.skip("a size-capped tmpfs needs root (mount namespace)")
    root = scratch / "root"
    root.mkdir()
    for name in ("etc", "usr", "var"):
        checked(run("cp", "-a", box.root / name, root / name))
    (root / "opt").mkdir()
    top = root / TOP
    # Filled with the box's /opt first, then shrunk to what that uses and ``spare`` more.
    script = (
        f"set -e; mount -t tmpfs -o size=2G tmpfs {root}/opt; cp -a {box.root}/opt/. {root}/opt/; "
        f"used=$(df -k --output=used {root}/opt | tail -1); "
        f"mount -o remount,size=$((used + {spare // 1024}))k {root}/opt; "
        f"{top}/bin/python -I -m firmware.cli.main update --root {root} {bundle} || echo exit=$? >&2; "
        f"readlink {top}/current {top}/previous; ls -A {top} {top}/slots"
    )
    result = run(tool("unshare", "util-linux"), "--mount", "--propagation", "private", "sh", "-c", script, timeout=120)
    listing = result.stdout
    return subprocess.CompletedProcess(result.args, 0, "", result.stderr), listing


def test_a_full_card_refuses_the_bundle_while_copying_it(box, releases, scratch):
    spare = releases.v3.stat().st_size // 2  # room for half the bundle
    result, listing = full_card_update(box, scratch, releases.v3, spare)
    assert f"exit={exits.CANTCREAT}" in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("exit=")]
    assert lines[-1].startswith(
        "edge-recorder: error: update refused: no space left for the update in /opt/edge-recorder ("
    ), result.stderr
    assert lines[-1].endswith(" MB): nothing was changed; free some space and try again")
    assert listing == (
        "slots/0.2.0\nslots/0.1.0\n"
        f"{scratch}/root/{TOP}:\nbin\ncurrent\nlib\nprevious\npyvenv.cfg\nslots\nupdate.history\nupdate.state\n\n"
        f"{scratch}/root/{TOP}/slots:\n0.1.0\n0.2.0\n"
    )


def test_a_full_card_refuses_the_new_version_before_installing_it(box, releases, scratch):
    """Room for the bundle and its files, not for a venv: refused before pip starts."""
    spare = releases.v3.stat().st_size * 2 + (20 << 20)
    result, listing = full_card_update(box, scratch, releases.v3, spare)
    assert f"exit={exits.CANTCREAT}" in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("exit=")]
    assert lines[-1].startswith(
        "edge-recorder: error: update refused: not enough space in /opt/edge-recorder for edge-recorder 0.3.0: "
    ), result.stderr
    assert listing.startswith("slots/0.2.0\nslots/0.1.0\n")
    assert listing.endswith("slots:\n0.1.0\n0.2.0\n")


def test_a_config_the_new_version_rejects_is_refused_and_its_slot_removed(box, releases, scratch):
    root = copy_box(box, scratch)
    (root / "etc/edge-recorder/config.toml").write_text('[device]\nid = "front desk"\n')  # no spaces in an id
    result = update(root, releases.v3)
    assert result.returncode == exits.CONFIG
    message = refusal(result)
    assert message.startswith(f"edge-recorder 0.3.0 rejects the box's config: {root}/etc/edge-recorder/config.toml:2:")
    assert layout(root) == layout(box.root)


def test_a_catalog_newer_than_the_bundle_reads_is_refused(box, releases, scratch):
    root = copy_box(box, scratch)
    db = sqlite3.connect(root / STATE / "catalog.sqlite3")
    db.execute("PRAGMA user_version = 99")  # written by a later version than 0.3.0
    db.close()
    result = update(root, releases.v3)
    assert result.returncode == exits.DATAERR
    assert refusal(result) == "the catalog is at schema 99; edge-recorder 0.3.0 reads up to 7"
    assert layout(root) == layout(box.root)


# -- forced -------------------------------------------------------------------------------------------------


def test_force_installs_an_older_version_into_a_slot_of_its_own(box, releases, scratch):
    root = copy_box(box, scratch)
    result = update(root, releases.v1, "--force")
    assert result.returncode == 0, result.stderr
    # slots/0.1.0 is the previous slot when the update starts: the new one may not overwrite it.
    assert layout(root)["links"]["current"] == "slots/0.1.0-2"
    assert layout(root)["links"]["previous"] == "slots/0.2.0"
    assert layout(root)["slots"] == ["0.1.0-2", "0.2.0"]
    version = run(root / TOP / "bin/python", "-I", "-m", "firmware.cli.main", "--version")
    assert version.stdout == "edge-recorder 0.1.0\n"
    assert state(root) == box.state_before


def test_nothing_from_the_folder_it_runs_in_or_the_callers_pip_settings_runs_as_root(box, releases, scratch):
    """The bundle may sit on a USB stick or in a download folder: a pip.py or venv.py beside it, a
    PYTHONPATH or pip settings of the caller's must not bring code the signature does not cover."""
    root = copy_box(box, scratch)
    folder = scratch / "downloads"
    folder.mkdir()
    marker = scratch / "ran-as-root"
    payload = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\n"
    for name in ("pip.py", "venv.py", "ensurepip.py", "sitecustomize.py", "usercustomize.py"):
        (folder / name).write_text(payload)
    (folder / "pip.conf").write_text("[global]\nfind-links = /nowhere\n")
    env = os.environ | {
        "PYTHONPATH": str(folder),
        "PIP_CONFIG_FILE": str(folder / "pip.conf"),
        "PIP_FIND_LINKS": str(folder),
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    }
    result = run(
        root / TOP / "bin/python",
        "-I",
        "-m",
        "firmware.cli.main",
        "update",
        "--root",
        root,
        releases.v1,
        "--force",
        cwd=folder,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert layout(root)["links"]["current"] == "slots/0.1.0-2"


def test_a_catalog_the_daemons_user_swapped_for_a_link_is_never_opened_as_root(box, releases, scratch):
    """The catalog's folder is the daemon's: a link put there to a file of root's must not have root
    migrate, copy, chown or chmod that file."""
    root = copy_box(box, scratch)
    secret = scratch / "roots.sqlite3"
    db = sqlite3.connect(secret)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    secret.chmod(0o600)
    before = (secret.read_bytes(), secret.stat().st_mode, secret.stat().st_uid)
    catalog = root / STATE / "catalog.sqlite3"
    catalog.unlink()
    catalog.symlink_to(secret)
    result = update(root, releases.v1, "--force")
    assert "Traceback" not in result.stderr
    assert (secret.read_bytes(), secret.stat().st_mode, secret.stat().st_uid) == before
    assert not (root / STATE / "catalog.sqlite3.before-0.1.0").exists()


def test_the_previous_slot_switches_back_with_its_own_installer(box, scratch):
    """Going back by hand (images/README.md): the kept slot is whole, and its install.sh switches to it."""
    root = copy_box(box, scratch)
    installer = root / TOP / "slots/0.1.0/images/install.sh"
    checked(run(installer, "--root", root, "--python", PYTHON, "--switch", "0.1.0"))
    assert layout(root)["links"]["current"] == "slots/0.1.0"
    assert layout(root)["links"]["previous"] == "slots/0.2.0"
    assert layout(root)["slots"] == ["0.1.0", "0.2.0"]
    version = run(root / TOP / "bin/python", "-I", "-m", "firmware.cli.main", "--version")
    assert version.stdout == "edge-recorder 0.1.0\n"
    assert state(root) == box.state_before


# -- the other ways in: the boot partition, the daemon's inbox ------------------------------------------------


def pending(root: Path, where: str = "all") -> subprocess.CompletedProcess[str]:
    """What the update units run, as root, with the box's own program."""
    return run(root / TOP / "bin/python", "-I", "-m", "firmware.cli.main", "update", "--pending", where, "--root", root)


def steps(root: Path) -> list[tuple[str, str, str]]:
    """The box's update history as (id, stage, via)."""
    return [(s.id, s.stage, s.via) for s in history.read(Layout(root))]


def on_card(root: Path, bundle: Path) -> Path:
    card = root / "boot/firmware"
    card.mkdir(parents=True, exist_ok=True)
    shutil.copy2(bundle, card)
    shutil.copy2(f"{bundle}.minisig", card)
    return card / bundle.name


def test_a_bundle_on_the_boot_partition_is_installed_and_leaves_the_card_with_a_note(box, releases, scratch):
    root = copy_box(box, scratch)
    bundle = on_card(root, releases.v3)
    result = pending(root)
    assert result.returncode == 0, result.stderr
    assert layout(root)["links"]["current"] == "slots/0.3.0"
    assert layout(root)["links"]["previous"] == "slots/0.2.0"
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["edge-recorder-update.txt"]
    note = (bundle.parent / "edge-recorder-update.txt").read_text()
    assert note.startswith(f"edge-recorder 0.3.0 is installed from {bundle.name} (slot 0.3.0); it replaced 0.2.0")
    update_id = steps(root)[-1][0]
    assert steps(root)[-3:] == [(update_id, stage, "boot") for stage in ("verified", "installed", "switched")]
    assert "incoming" not in layout(root)["others"]


def test_a_refused_bundle_on_the_card_stays_with_a_note_and_is_tried_again_only_when_replaced(
    box, releases, keys, scratch
):
    root = copy_box(box, scratch)
    bundle = on_card(root, releases.v3)
    minisign_sign(bundle, keys.stranger)
    result = pending(root)
    assert result.returncode == exits.DATAERR, result.stderr
    note = bundle.with_name(bundle.name + ".error.txt")
    assert note.read_text().startswith(f"{bundle.name} was not installed: {bundle.name} is not signed by the key")
    assert "Nothing on the box was changed." in note.read_text()
    assert_untouched(box, root)
    assert steps(root)[-1][1:] == ("refused", "boot")
    refusals = len(steps(root))

    # the next boot, with the card's file times ahead of the box's clock (a box without a network boots with
    # its clock behind): the same bundle is not checked again
    later = note.stat().st_mtime + 3600
    os.utime(bundle, (later, later))
    again = pending(root)
    assert again.returncode == 0, again.stderr
    assert "refused already" in again.stderr
    assert len(steps(root)) == refusals

    minisign_sign(bundle, keys.secret)  # the installer puts a good copy on the card
    result = pending(root)
    assert result.returncode == 0, result.stderr
    assert layout(root)["links"]["current"] == "slots/0.3.0"
    assert not note.exists() and not bundle.exists()


def hand_over(root: Path, bundle: Path | None, **fields) -> tuple[Request, Path]:
    """What the daemon does for an MQTT update command once the download is complete: the bundle and its
    signature in its inbox as ID.tar and ID.tar.minisig (its own files), then the request."""
    inbox = root / STATE / "updates"
    inbox.mkdir(mode=0o750, exist_ok=True)
    request = Request(new_id(), "edge-recorder-0.3.0-x86_64.tar", request_id="r-17", **fields)
    if bundle is not None:
        shutil.copy2(bundle, inbox / request.bundle)
        shutil.copy2(f"{bundle}.minisig", inbox / f"{request.bundle}.minisig")
    put(inbox, request)
    for path in (inbox, *inbox.iterdir()):
        os.lchown(path, DAEMON_UID, DAEMON_UID)
    return request, inbox


def test_an_update_the_daemon_handed_over_is_installed_under_its_id_and_the_inbox_emptied(box, releases, scratch):
    root = copy_box(box, scratch)
    request, inbox = hand_over(root, releases.v3)
    result = pending(root)
    assert result.returncode == 0, result.stderr
    assert layout(root)["links"]["current"] == "slots/0.3.0"
    assert list(inbox.iterdir()) == []
    assert steps(root)[-3:] == [(request.id, stage, "mqtt") for stage in ("verified", "installed", "switched")]
    assert {s.request_id for s in history.read(Layout(root))[-3:]} == {"r-17"}
    assert "incoming" not in layout(root)["others"]


def test_what_the_daemons_user_puts_in_the_inbox_is_never_followed_or_waited_for(box, releases, scratch):
    """The inbox is the daemon's: a link there to a file of root's, a FIFO, or a request that is not one, is
    refused (as an update refused under its id) without root opening what it points to."""
    root = copy_box(box, scratch)
    linked, inbox = hand_over(root, None)
    (inbox / linked.bundle).symlink_to(releases.v3)
    shutil.copy2(f"{releases.v3}.minisig", inbox / f"{linked.bundle}.minisig")
    fifo, _ = hand_over(root, None)
    os.mkfifo(inbox / fifo.bundle)
    (inbox / f"{new_id()}.request").write_text('{"id": "../../etc/shadow", "name": "x.tar"}')
    result = pending(root)
    assert result.returncode == exits.DATAERR, result.stderr
    assert "Traceback" not in result.stderr
    refused = {s.id: s for s in history.read(Layout(root)) if s.stage == "refused"}
    assert "a link is never followed" in refused[linked.id].message
    assert f"{fifo.bundle} is not a regular file" in refused[fifo.id].message
    assert any("not an update request: id: not an update id" in s.message for s in refused.values())
    assert list(inbox.iterdir()) == []
    assert_untouched(box, root)


def test_an_inbox_that_is_a_link_is_not_walked_and_odd_files_in_it_are_refused_and_removed(box, releases, scratch):
    root = copy_box(box, scratch)
    _, inbox = hand_over(root, releases.v3)
    elsewhere = scratch / "roots-folder"
    shutil.move(inbox, elsewhere)
    inbox.symlink_to(elsewhere)
    held = sorted(os.listdir(elsewhere))
    result = pending(root, "inbox")
    assert result.returncode == exits.DATAERR, result.stderr
    assert "is not a folder" in result.stderr and "a link is never followed" in result.stderr
    assert sorted(os.listdir(elsewhere)) == held  # nothing there was opened or removed
    assert not inbox.is_symlink() and not inbox.exists()  # the link is gone: the path unit is not started forever
    assert_untouched(box, root)

    sparse, inbox = hand_over(root, None)
    with (inbox / sparse.bundle).open("wb") as f:
        f.truncate(200 << 20)  # takes no room on the card, and root's copy would take 200 MB
    shutil.copy2(f"{releases.v3}.minisig", inbox / f"{sparse.bundle}.minisig")
    (inbox / f"{new_id()}.request").mkdir()  # the path unit would start the updater for it forever
    result = pending(root, "inbox")
    assert result.returncode == exits.DATAERR, result.stderr
    refused = {s.id: s for s in history.read(Layout(root)) if s.stage == "refused"}
    assert f"{sparse.bundle} is sparse" in refused[sparse.id].message
    assert list(inbox.iterdir()) == []
    assert_untouched(box, root)
