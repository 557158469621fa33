"""The Mender Update Module (images/mender/edge-recorder) under the real Mender client, on a staged box.

Everything is real but the box's daemon: Debian's ``mender`` 3.4 in standalone mode (``mender
install``, ``commit``, ``rollback``) with a configuration and a data folder of its own per test, and
Artifacts written by Debian's ``mender-artifact`` (``write module-image -T edge-recorder``) with a
bundle built by ``python -m firmware.update.build`` and its minisign signature as the payload. The
box is 0.1.0 installed by ``images/install.sh`` into an empty root, as tests/test_update.py makes it
(tests/releases.py), which also puts the module where Mender 3.4 looks for modules. That place,
/usr/share/mender/modules/v3, is not configurable in 3.4 (``--data`` moves only the work folder), so
mender runs in a private mount namespace (``unshare``) where the box's own modules folder is bound
over it and a folder holding ``artifact_info`` (the name of what the box runs before its first
Artifact) over /etc/mender: this machine's files are left alone. The module is told the box's root
by EDGE_RECORDER_ROOT.

The new version's daemon does not run here (tests/test_rollback.py runs it): the test plays it. It
confirms the update by leaving its note as the daemon does, or crash-loops by running the update
guard before each start as the unit does, at the moment the switch is pending while ``mender
install`` waits. Needs root (mounts, the daemon's user).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.update.slots import Layout
from firmware.update.state import Confirmed, Phase, UpdateState, read_state

from .box_chroot import work_folder
from .programs import run, tool
from .releases import (
    AS_ROOT,
    GUARD,
    PATH,
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
)

pytestmark = pytest.mark.skipif(not AS_ROOT, reason="mender runs in a mount namespace of its own: root only")

DAEMON_UID = 64123  # the catalog's owner and the note's: a user that is not root, as edge-recorder on a box
CONFIG = '[device]\nid = "front-desk-3"\n\n[update]\nconfirm_seconds = 2\n'
MODULES = "usr/share/mender/modules/v3"  # where images/install.sh puts the module, and Mender 3.4 looks
DEVICE_TYPE = "raspberrypi4"
BEFORE = "edge-recorder-0.1.0"  # the Artifact name the box was made with (/etc/mender/artifact_info)
ARTIFACT = "edge-recorder-0.2.0"
COMMIT_OR_ROLLBACK = "Use 'commit' to update, or 'rollback' to roll back the update."


@dataclass
class Artifacts:
    good: Path  # 0.2.0, the bundle signed with the box's key
    stranger: Path  # the same bundle signed with another key, the Artifact signed with the fleet's Mender key
    mender_key: Path  # the public half of the fleet's Mender signing key


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    with work_folder("edge-recorder-mender-") as folder:
        yield folder


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def wheelhouse(work) -> Path:
    return make_wheelhouse(copy_source(work / "v1", "0.1.0"), work / "wheelhouse")


def write_artifact(bundle: Path, output: Path, name: str, *args: str | Path) -> Path:
    """A Mender Artifact for the module: the bundle and its signature as the payload's two files."""
    checked(
        run(
            tool("mender-artifact", "mender-artifact"), "write", "module-image", "-T", "edge-recorder",
            "-t", DEVICE_TYPE, "-n", name, "--software-version", name.removeprefix("edge-recorder-"),
            "-o", output, "-f", bundle, "-f", f"{bundle}.minisig", *args,
        )
    )  # fmt: skip
    return output


@pytest.fixture(scope="module")
def artifacts(work, wheelhouse, keys) -> Artifacts:
    bundle = build(copy_source(work / "v2", "0.2.0"), work / "dist", wheelhouse)
    minisign_sign(bundle, keys.secret)
    good = write_artifact(bundle, work / f"{ARTIFACT}.mender", ARTIFACT)

    (work / "stranger").mkdir()
    signed_elsewhere = Path(shutil.copy2(bundle, work / "stranger" / bundle.name))
    minisign_sign(signed_elsewhere, keys.stranger)
    # The fleet's Mender key: Mender's own check passes, the box's still refuses the bundle.
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = work / "mender-signing.key", work / "mender-signing.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    stranger = write_artifact(signed_elsewhere, work / "stranger.mender", "edge-recorder-0.2.0-stranger", "-k", private)
    return Artifacts(good, stranger, public)


@pytest.fixture(scope="module")
def base(work, wheelhouse, keys) -> Path:
    """0.1.0 installed, with the box's config, catalog and spool."""
    root = work / "base"
    root.mkdir()
    install_box(root, wheelhouse, keys.public)
    (root / "etc/edge-recorder/config.toml").write_text(CONFIG)
    make_state(root / STATE, DAEMON_UID, DAEMON_UID)
    return root


@dataclass
class Mender:
    """Debian's mender, standalone, for the box ``root``: its own config, data folder and /etc/mender."""

    root: Path
    folder: Path
    timeout: str = ""  # EDGE_RECORDER_CONFIRM_TIMEOUT for the module; "": its default

    def command(self, *args: str | Path) -> list[str]:
        config, data, etc = self.folder / "mender.conf", self.folder / "data", self.folder / "etc"
        mender = tool("mender", "mender-client")  # which also makes the folders bound over below
        script = (
            f"set -e; mount --bind {shlex.quote(str(self.root / MODULES))} /{MODULES}; "
            f"mount --bind {shlex.quote(str(etc))} /etc/mender; "
            f"exec {mender} --no-syslog --log-level info --config {shlex.quote(str(config))} "
            f'--fallback-config {shlex.quote(str(self.folder / "none.conf"))} --data {shlex.quote(str(data))} "$@"'
        )
        unshare = tool("unshare", "util-linux")
        return [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "mender", *map(str, args)]

    @property
    def env(self) -> dict[str, str]:
        env = {"PATH": PATH, "LANG": "C.UTF-8", "EDGE_RECORDER_ROOT": str(self.root)}
        if self.timeout:
            env["EDGE_RECORDER_CONFIRM_TIMEOUT"] = self.timeout
        return env

    def __call__(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run(*self.command(*args), env=self.env, timeout=600)

    def artifact_name(self) -> str:
        return checked(self("show-artifact")).stdout.strip()


@pytest.fixture
def box(work, base) -> Iterator[tuple[Path, Mender]]:
    """A copy of the box for one test, and a mender of its own for it."""
    folder = Path(tempfile.mkdtemp(dir=work, prefix="box-"))
    folder.chmod(0o755)  # the catalog's owner reaches the catalog through it
    root = folder / "root"
    checked(run("cp", "-a", base, root))
    mender = folder / "mender"
    (mender / "data").mkdir(parents=True)
    (mender / "etc").mkdir()
    (mender / "data/device_type").write_text(f"device_type={DEVICE_TYPE}\n")
    (mender / "etc/artifact_info").write_text(f"artifact_name={BEFORE}\n")
    (mender / "mender.conf").write_text("{}\n")
    yield root, Mender(root, mender)
    checked(run("rm", "-rf", folder))


# -- playing the box's side ----------------------------------------------------------------------------


@dataclass
class Installing:
    """``mender install`` running in the background while the test plays the new version."""

    process: subprocess.Popen
    log: Path

    def result(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        self.process.wait(timeout=timeout)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, "", self.log.read_text())


def install(mender: Mender, artifact: Path) -> Installing:
    log = mender.folder / "install.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            mender.command("install", artifact), env=mender.env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    return Installing(process, log)


def pending(mender: Mender, installing: Installing, timeout: float = 180) -> UpdateState:
    """The switch to 0.2.0, once ``edge-recorder update`` has made it and the module waits for it: the module
    has recorded the switch in the File API folder's tmp/ (Mender 3.4's log of a module's output may lag
    behind it: it logs one line per read)."""
    recorded = mender.folder / "data/modules/v3/payloads/0000/tree/tmp/switch"
    deadline = time.monotonic() + timeout
    while not recorded.exists():
        assert installing.process.poll() is None, f"mender install ended first:\n{installing.log.read_text()}"
        assert time.monotonic() < deadline, installing.log.read_text()
        time.sleep(0.2)
    found = the_state(mender.root)
    assert (found.phase, found.slot) == (Phase.PENDING, "0.2.0"), found
    assert layout(mender.root)["links"]["current"] == "slots/0.2.0"
    return found


def daemon_confirms(root: Path, switch: UpdateState) -> None:
    """The new version's daemon, healthy for confirm_seconds, leaves its note (the guard records it later)."""
    note = Layout(root).on_box(switch.confirmation)
    note.write_text(Confirmed(switch.id, switch.slot, switch.version, "2026-01-01T00:05:00Z", 2).to_text())
    os.chown(note, DAEMON_UID, DAEMON_UID)


def crash_loops(root: Path) -> None:
    """The new version crashes at each start: systemd restarts it, and the guard runs before each start."""
    for _ in range(4):
        checked(run("sh", root / GUARD, "--root", root, "start"))


def the_state(root: Path) -> UpdateState:
    found = read_state(Layout(root))
    assert found is not None
    return found


def running(root: Path) -> str:
    result = checked(run(root / TOP / "bin/python", "-I", "-m", "firmware.cli.main", "--version"))
    return result.stdout.strip()


def status_lines(root: Path) -> list[str]:
    command = (root / TOP / "bin/python", "-I", "-m", "firmware.cli.main", "update", "--status", "--root", root)
    return checked(run(*command)).stdout.splitlines()


# -- install, commit, rollback ---------------------------------------------------------------------------


def test_install_waits_for_the_new_version_to_confirm_itself_and_commit_keeps_it(box, artifacts):
    root, mender = box
    assert mender.artifact_name() == BEFORE
    installing = install(mender, artifacts.good)
    switch = pending(mender, installing)
    time.sleep(1)  # the module is waiting: install has not returned without the confirmation
    assert installing.process.poll() is None, installing.log.read_text()
    daemon_confirms(root, switch)
    installed = installing.result()
    assert installed.returncode == 0, installed.stderr
    assert COMMIT_OR_ROLLBACK in installed.stderr
    # [update] confirm_seconds = 2 in the box's config, and 300 s for the start
    assert "waiting up to 302 s for edge-recorder 0.2.0 to confirm the update" in installed.stderr
    assert "edge-recorder 0.2.0 (slots/0.2.0) confirmed the update" in installed.stderr
    assert "edge-recorder-0.2.0-x86_64.tar: signed by the key in /etc/edge-recorder/update.pub" in installed.stderr

    committed = mender("commit")
    assert committed.returncode == 0, committed.stderr
    assert "edge-recorder 0.2.0 (slots/0.2.0) is committed" in committed.stderr
    assert mender.artifact_name() == ARTIFACT
    assert "rootfs-image.edge-recorder.version=0.2.0" in checked(mender("show-provides")).stdout.splitlines()
    assert layout(root)["links"]["current"] == "slots/0.2.0"
    assert running(root) == "edge-recorder 0.2.0"
    assert status_lines(root)[0] == "running:  edge-recorder 0.2.0 (slot 0.2.0), confirmed at 2026-01-01T00:05:00Z"
    assert mender("commit").returncode == 2  # Mender is done with it: nothing left to commit


def test_a_rollback_after_install_brings_the_previous_version_back(box, artifacts):
    root, mender = box
    installing = install(mender, artifacts.good)
    pending(mender, installing)
    confirm(root, DAEMON_UID, DAEMON_UID)  # the note, recorded by the guard at the next start
    installed = installing.result()
    assert installed.returncode == 0, installed.stderr
    assert the_state(root).phase is Phase.CONFIRMED

    rolled = mender("rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert "switched back from slots/0.2.0 (edge-recorder 0.2.0) to slots/0.1.0" in rolled.stderr
    assert "systemctl stop edge-recorder.service is left to it" in rolled.stderr  # a staged root: no service
    assert layout(root)["links"]["current"] == "slots/0.1.0"
    assert layout(root)["links"]["previous"] == "slots/0.2.0"
    assert running(root) == "edge-recorder 0.1.0"
    back = the_state(root)
    assert (back.phase, back.reason) == (Phase.ROLLED_BACK, "requested")
    assert back.detail == "Mender rolled back the deployment of edge-recorder-0.2.0 (edge-recorder 0.2.0)"
    lines = status_lines(root)
    assert lines[0].endswith(
        " from edge-recorder 0.2.0: it was switched back on request (Mender's rollback, or update-guard rollback)"
    )
    assert lines[1] == f"why:      {back.detail}"
    assert mender.artifact_name() == BEFORE


# -- failures: Mender sees them and rolls back -------------------------------------------------------------


def test_a_version_the_guard_switches_back_fails_the_install_and_mender_rolls_back(box, artifacts):
    root, mender = box
    installing = install(mender, artifacts.good)
    pending(mender, installing)
    crash_loops(root)
    failed = installing.result()
    assert failed.returncode == 1, failed.stderr
    assert (
        "the update guard switched edge-recorder 0.2.0 back to slots/0.1.0: "
        "edge-recorder 0.2.0 did not stay up: 3 starts without being confirmed"
    ) in failed.stderr
    # Mender's rollback path ran: the guard had switched back already, and the module said what runs.
    assert "Rolling back Artifact..." in failed.stderr
    assert "was switched back already (crash-loop): nothing to take back" in failed.stderr
    assert "running:  edge-recorder 0.1.0 (slot 0.1.0), switched back at " in failed.stderr
    assert COMMIT_OR_ROLLBACK not in failed.stderr
    assert layout(root)["links"]["current"] == "slots/0.1.0"
    assert the_state(root).reason == "crash-loop"
    assert mender.artifact_name() == BEFORE
    assert mender("commit").returncode == 2  # the deployment is over: nothing to commit


def test_a_version_that_never_confirms_in_time_is_rolled_back_by_mender(box, artifacts):
    root, mender = box
    mender.timeout = "3"
    failed = install(mender, artifacts.good).result(timeout=300)
    assert failed.returncode == 1, failed.stderr
    assert "edge-recorder 0.2.0 did not confirm the update within 3 s (EDGE_RECORDER_CONFIRM_TIMEOUT)" in failed.stderr
    assert "Rolling back Artifact..." in failed.stderr
    assert "switched back from slots/0.2.0 (edge-recorder 0.2.0) to slots/0.1.0" in failed.stderr
    assert layout(root)["links"] == {
        "current": "slots/0.1.0",
        "previous": "slots/0.2.0",
        "bin": "current/bin",
        "lib": "current/lib",
        "pyvenv.cfg": "current/pyvenv.cfg",
    }
    back = the_state(root)
    assert (back.phase, back.reason) == (Phase.ROLLED_BACK, "requested")
    assert running(root) == "edge-recorder 0.1.0"
    assert mender.artifact_name() == BEFORE


def test_a_bundle_not_signed_by_the_boxs_key_is_refused_even_in_an_artifact_mender_trusts(box, artifacts):
    root, mender = box
    (mender.folder / "mender.conf").write_text(f'{{"ArtifactVerifyKey": "{artifacts.mender_key}"}}\n')
    before, files = layout(root), state(root)
    refused = mender("install", artifacts.stranger)
    assert refused.returncode == 1, refused.stderr
    assert "authenticated digital signature of artifact" in refused.stderr  # Mender's own check passed
    assert (
        "edge-recorder-0.2.0-x86_64.tar is not signed by the key in update.pub (incompatible key identifiers)"
    ) in refused.stderr
    assert (
        "edge-recorder update refused edge-recorder-0.2.0-x86_64.tar (its message is above): nothing was switched"
    ) in refused.stderr
    assert "this deployment switched nothing: nothing to take back" in refused.stderr
    after = layout(root)
    assert (after["links"], after["slots"]) == (before["links"], before["slots"])
    assert read_state(Layout(root)) is None  # no switch recorded
    assert state(root) == files
    assert running(root) == "edge-recorder 0.1.0"
    assert mender.artifact_name() == BEFORE
