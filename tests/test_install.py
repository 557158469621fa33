"""images/install.sh, the install artifact, applied to an empty root directory.

The script runs for real: a wheelhouse is built from a copy of this repository (``pip wheel``,
as images/README.md says), and the script installs from it offline (``--wheelhouse
--no-index``) into a temporary directory as the target root, with the machine's Debian
``/usr/bin/python3`` (the same Python 3.11 as Raspberry Pi OS Bookworm). A root other than /
is a *staged* install: the venv is built in a slot, ROOT/opt/edge-recorder/slots/VERSION, and
moved to /opt/edge-recorder/slots/VERSION (images/install.sh says how), with the links that make
/opt/edge-recorder the running version (``current``, ``previous``, ``bin``). The checks look at
the layout, and then run the installed ``/opt/edge-recorder/bin/edge-recorder`` at its real
path: in a private mount namespace, ROOT's /opt and /etc are bound into a throwaway root beside
the machine's /usr, and the program runs chrooted there. Nothing outside the temporary
directories is touched.

Ownership (root:edge-recorder) is checked when the tests run as root, as in CI: only root
applies systemd-sysusers/systemd-tmpfiles (the script skips them otherwise, and so do these
checks). The chroot check needs root too. shellcheck and the systemd tools missing is a
failure, not a skip: CI installs the packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware import config as cfg
from firmware.cli import exits
from firmware.update.slots import Layout
from firmware.update.state import Phase, read_state

from .programs import run, tool

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "images" / "install.sh"
SYSTEMD = REPO / "systemd"
PYTHON = Path("/usr/bin/python3")  # Debian's, as on the box; python3-venv gives it ensurepip
AS_ROOT = os.geteuid() == 0
UNITS = ("edge-recorder.service", "edge-recorder-provision.service", "edge-recorder-update-card.service")
UPDATE_PATH = "edge-recorder-update.path"  # enabled under paths.target: the daemon's update requests
UPDATE_UNIT = "edge-recorder-update.service"  # installed, not enabled: started by the path unit only
ROLLBACK_UNIT = "edge-recorder-rollback.service"  # installed, not enabled: started by OnFailure= only
GUARD = "usr/lib/edge-recorder/update-guard"
MENDER_MODULE = "usr/share/mender/modules/v3/edge-recorder"  # the Mender Update Module (images/mender/)
COMMAND_LINK = "usr/local/bin/edge-recorder"  # the command on PATH, for `sudo edge-recorder provision`
PROGRAM = "/opt/edge-recorder/bin/edge-recorder"
SLOT = "/opt/edge-recorder/slots/0.1.0"  # the first install's slot: the version of this checkout
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's, and sudo's secure_path
GOOD = '[device]\nid = "front-desk-3"\n\n[encryption]\npublic_key = "/etc/edge-recorder/encryption.pub"\n'


def install(root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    result = run(INSTALL, "--root", root, "--python", PYTHON, *args)
    assert result.returncode == 0, f"install.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def copy_source(to: Path) -> Path:
    """The files a wheel is built from, without the checkout's build clutter."""
    to.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, to / name)
    for name in ("firmware", "hal"):
        shutil.copytree(REPO / name, to / name, ignore=shutil.ignore_patterns("__pycache__"))
    return to


@dataclass
class Installed:
    root: Path
    wheelhouse: Path
    wheel: Path
    source: Path
    output: str
    default_config: str


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    assert PYTHON.exists(), f"{PYTHON} missing: install the Debian packages python3 and python3-venv"
    work = tmp_path_factory.mktemp("install")
    source = copy_source(work / "source")
    wheelhouse = work / "wheelhouse"
    # The wheel and every dependency (setuptools too, for --from-source offline).
    result = run(sys.executable, "-m", "pip", "wheel", "-q", "-w", wheelhouse, source, "setuptools")
    assert result.returncode == 0, result.stderr
    (wheel,) = wheelhouse.glob("edge_recorder-*.whl")
    root = work / "root"
    root.mkdir()
    result = install(root, "--wheel", wheel, "--wheelhouse", wheelhouse, "--no-index")
    config = (root / "etc/edge-recorder/config.toml").read_text()
    return Installed(root, wheelhouse, wheel, source, result.stderr, config)


def layout(root: Path) -> dict[str, tuple[str, int, int, int, str]]:
    """Everything outside the venv: kind, mode, owner, group, link target."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith("opt/edge-recorder/"):
            continue
        st = path.lstat()
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        out[rel] = (kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, os.readlink(path) if kind == "link" else "")
    return out


def top_level(root: Path) -> dict[str, str]:
    """/opt/edge-recorder: each entry and where it links to ("" for a folder)."""
    top = root / "opt/edge-recorder"
    return {path.name: os.readlink(path) if path.is_symlink() else "" for path in top.iterdir()}


def slots(root: Path) -> list[str]:
    return sorted(path.name for path in (root / "opt/edge-recorder/slots").iterdir())


def interpreter(link: Path) -> str:
    """Where a venv's ``bin/python*`` leads on the box: links within bin/ up to the absolute one."""
    target = os.readlink(link)
    while not target.startswith("/"):
        target = os.readlink(link.parent / target)
    return target


def group_id(root: Path, name: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"no group {name} in {root}/etc/group")


# -- the layout --------------------------------------------------------------------------------


def test_every_file_is_in_place_with_its_mode(installed):
    root = installed.root
    files = layout(root)
    wants = "etc/systemd/system/multi-user.target.wants"
    expected = {
        "usr/lib/systemd/system/edge-recorder.service": SYSTEMD / "edge-recorder.service",
        "usr/lib/systemd/system/edge-recorder-provision.service": SYSTEMD / "edge-recorder-provision.service",
        f"usr/lib/systemd/system/{ROLLBACK_UNIT}": SYSTEMD / ROLLBACK_UNIT,
        f"usr/lib/systemd/system/{UPDATE_UNIT}": SYSTEMD / UPDATE_UNIT,
        "usr/lib/systemd/system/edge-recorder-update-card.service": SYSTEMD / "edge-recorder-update-card.service",
        f"usr/lib/systemd/system/{UPDATE_PATH}": SYSTEMD / UPDATE_PATH,
        "usr/lib/sysusers.d/edge-recorder.conf": SYSTEMD / "edge-recorder.sysusers",
        "usr/lib/tmpfiles.d/edge-recorder.conf": SYSTEMD / "edge-recorder.tmpfiles",
    }
    # The update guard, outside the slots, where the units run it.
    expected[GUARD] = SYSTEMD / "update-guard"
    # The Mender Update Module, where Mender looks for it (it came with this checkout's images/).
    expected[MENDER_MODULE] = REPO / "images" / "mender" / "edge-recorder"
    for rel, source in expected.items():
        kind, mode, uid, gid, _ = files[rel]
        executable = rel in (GUARD, MENDER_MODULE)
        assert (kind, mode) == ("file", 0o755 if executable else 0o644), rel
        assert (root / rel).read_bytes() == source.read_bytes(), rel
        assert not AS_ROOT or (uid, gid) == (0, 0), rel
    links = {f"{wants}/{unit}": f"/usr/lib/systemd/system/{unit}" for unit in UNITS}
    links[f"etc/systemd/system/paths.target.wants/{UPDATE_PATH}"] = f"/usr/lib/systemd/system/{UPDATE_PATH}"
    links[COMMAND_LINK] = PROGRAM
    for rel, target in links.items():
        assert files[rel][0] == "link" and files[rel][4] == target, rel
    # Once the root is /, the command on PATH is the running version's script, through current.
    program = root / PROGRAM.lstrip("/")
    assert program.is_file() and program.read_text().startswith(f"#!{SLOT}/bin/python\n")
    # A first install is the first slot, and /opt/edge-recorder is that venv through links.
    assert top_level(root) == {
        "slots": "",
        "current": "slots/0.1.0",
        "bin": "current/bin",
        "lib": "current/lib",
        "pyvenv.cfg": "current/pyvenv.cfg",
    }
    assert slots(root) == ["0.1.0"]  # and no update.state: a first install has nothing to go back to
    assert files["etc/edge-recorder"][:2] == ("dir", 0o750)
    assert files["etc/edge-recorder/config.toml"][:2] == ("file", 0o640)
    if AS_ROOT:  # systemd-tmpfiles applied edge-recorder.tmpfiles
        gid = group_id(root, "edge-recorder")
        assert files["etc/edge-recorder"][2:4] == (0, gid)
        assert files["etc/edge-recorder/config.toml"][2:4] == (0, gid)
    # Nothing else, apart from the user database that sysusers writes.
    placed = {*expected, *links, "etc/edge-recorder/config.toml", "opt/edge-recorder"}
    placed |= {str(parent) for path in placed for parent in Path(path).parents if str(parent) != "."}
    users = {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "etc/.pwd.lock"} if AS_ROOT else set()
    assert set(files) == placed | users
    for rel in placed:
        if files[rel][0] == "dir" and rel != "etc/edge-recorder":
            assert files[rel][1] == 0o755, rel


def test_the_venv_is_made_for_its_slot_under_opt_edge_recorder(installed):
    venv = installed.root / SLOT.lstrip("/")
    program = venv / "bin/edge-recorder"
    assert program.stat().st_mode & 0o777 == 0o755
    # Its own slot's interpreter, not current's: a slot keeps running its own version.
    assert program.read_text().startswith(f"#!{SLOT}/bin/python\n")
    assert {interpreter(link) for link in venv.glob("bin/python*")} == {"/usr/bin/python3"}
    cfg_lines = (venv / "pyvenv.cfg").read_text().splitlines()
    assert "home = /usr/bin" in cfg_lines and "include-system-site-packages = false" in cfg_lines
    assert f"command = /usr/bin/python3 -m venv {SLOT}" in cfg_lines
    # What it takes to switch back to this slot: the script and the units of this version.
    assert (venv / "images/install.sh").read_bytes() == INSTALL.read_bytes()
    module = venv / "images/mender/edge-recorder"  # installed again by a switch back to this slot
    assert module.read_bytes() == (REPO / "images/mender/edge-recorder").read_bytes()
    assert module.stat().st_mode & 0o777 == 0o755
    for unit in UNITS:
        assert (venv / "systemd" / unit).read_bytes() == (SYSTEMD / unit).read_bytes()
    # No text file in it names the directory it was built in.
    result = run("grep", "-rlI", "--exclude=*.pyc", str(installed.root), venv)
    assert result.stdout == "", result.stdout
    # Byte-compiled: the units run with PYTHONDONTWRITEBYTECODE=1 on a read-only /opt.
    (site,) = venv.glob("lib/python3.*/site-packages")
    assert list((site / "firmware/__pycache__").glob("provision.*.pyc"))
    assert list((site / "firmware/cli/__pycache__").glob("main.*.pyc"))


def test_the_default_config_is_every_key_at_its_default(installed):
    assert installed.default_config == cfg.describe()
    assert cfg.parse({}) == cfg.load(installed.root / "etc/edge-recorder/config.toml")


def test_sysusers_made_the_user_the_units_run_as(installed):
    if not AS_ROOT:
        pytest.skip("systemd-sysusers runs only as root (at the first boot otherwise)")
    passwd = {f[0]: f for f in (ln.split(":") for ln in (installed.root / "etc/passwd").read_text().splitlines())}
    groups = {f[0]: f for f in (ln.split(":") for ln in (installed.root / "etc/group").read_text().splitlines())}
    _, _, uid, gid, _, home, shell = passwd["edge-recorder"]
    assert int(uid) < 1000 and int(gid) == group_id(installed.root, "edge-recorder")
    assert (home, shell) == ("/var/lib/edge-recorder", "/usr/sbin/nologin")
    for supplementary in ("audio", "gpio"):
        assert "edge-recorder" in groups[supplementary][3].split(",")


def test_both_services_are_enabled(installed):
    systemctl = tool("systemctl", "systemd")
    for unit in UNITS:
        result = run(systemctl, f"--root={installed.root}", "is-enabled", unit)
        assert result.stdout.strip() == "enabled", (unit, result.stdout, result.stderr)


def test_the_installed_units_pass_systemd_analyze_verify(installed, tmp_path):
    """verify needs what the units are ordered against (the machine's own unit files), and the
    programs they run, inside its --root; verify exits 0 on most mistakes, so any output at all
    counts as a failure (as in tests/test_systemd.py)."""
    analyze = tool("systemd-analyze", "systemd")
    root = tmp_path / "verify"
    units = root / "usr/lib/systemd/system"
    shutil.copytree("/usr/lib/systemd/system", units, symlinks=True)
    for unit in (*UNITS, ROLLBACK_UNIT):
        shutil.copy2(installed.root / "usr/lib/systemd/system" / unit, units / unit)
    (root / "opt/edge-recorder/bin").mkdir(parents=True)
    shutil.copy2(installed.root / "opt/edge-recorder/bin/edge-recorder", root / "opt/edge-recorder/bin")
    (root / GUARD).parent.mkdir(parents=True)
    shutil.copy2(installed.root / GUARD, root / GUARD)  # ExecStartPre=, ExecCondition=
    (root / "usr/bin").mkdir()
    (root / "bin").symlink_to("usr/bin")
    shutil.copy2(shutil.which("kill") or "/bin/kill", root / "usr/bin/kill")  # ExecReload=
    shutil.copy2(tool("systemctl", "systemd"), root / "usr/bin/systemctl")  # the rollback unit's ExecStart=

    result = run(analyze, "verify", "--man=no", f"--root={root}", *UNITS, ROLLBACK_UNIT)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# -- the installed program, at /opt/edge-recorder --------------------------------------------


def in_chroot(installed: Installed, tmp_path: Path, *commands: str) -> subprocess.CompletedProcess[str]:
    """Run shell ``commands`` chrooted into a root made of the machine's /usr and the installed
    root's /opt (read-only) and /etc (a copy), in a private mount namespace."""
    if not AS_ROOT:
        pytest.skip("chroot and bind mounts need root")
    unshare = tool("unshare", "util-linux")
    jail = tmp_path / "jail"
    for name in ("usr", "opt/edge-recorder", "var", "boot/firmware", "tmp"):
        (jail / name).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        (jail / name).symlink_to(f"usr/{name}")
    shutil.copytree(installed.root / "etc", jail / "etc", symlinks=True)
    mounts = [
        f"mount --rbind /usr {jail}/usr",
        f"mount -o remount,bind,ro {jail}/usr",
        f"mount --bind {installed.root}/opt/edge-recorder {jail}/opt/edge-recorder",
        f"mount -o remount,bind,ro {jail}/opt/edge-recorder",
        # The installed root's /usr/local/bin over the machine's: the command on PATH.
        f"mount --bind {installed.root}/usr/local/bin {jail}/usr/local/bin",
        f"mount -o remount,bind,ro {jail}/usr/local/bin",
    ]
    chroots = [f"chroot {jail} env PATH={PATH} sh -ec '{c}'" for c in commands]
    script = "set -e; mount --make-rprivate /; " + "; ".join(mounts + chroots)
    return run(unshare, "--mount", "--fork", "sh", "-c", script, timeout=60)


def test_the_installed_program_runs_at_opt_once_the_root_is_mounted_as_slash(installed, tmp_path):
    result = in_chroot(
        installed,
        tmp_path,
        f"{PROGRAM} --version",
        f"{PROGRAM} config check /etc/edge-recorder/config.toml",
        "command -v edge-recorder",
        "edge-recorder --version",
    )
    assert result.returncode == 0, result.stderr
    version, check, found, on_path = result.stdout.splitlines()
    assert version == "edge-recorder 0.1.0"
    assert check.startswith("/etc/edge-recorder/config.toml: ok"), check
    assert (found, on_path) == ("/" + COMMAND_LINK, "edge-recorder 0.1.0")


def test_the_installed_provisioning_applies_a_file_from_the_boot_partition(installed, tmp_path):
    import pyrage

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    boot = tmp_path / "jail/boot/firmware"
    program = f"{PROGRAM} provision --boot /boot/firmware --boot /boot"

    def stage(config: str) -> None:
        boot.mkdir(parents=True, exist_ok=True)
        (boot / "edge-recorder.toml").write_text(config)
        (boot / "edge-recorder").mkdir(exist_ok=True)
        (boot / "edge-recorder/encryption.pub").write_text(recipient + "\n")

    stage(GOOD)
    result = in_chroot(installed, tmp_path, program)
    assert result.returncode == 0, result.stderr
    etc = tmp_path / "jail/etc/edge-recorder"
    assert (etc / "config.toml").read_text() == GOOD
    gid = group_id(installed.root, "edge-recorder")
    for name in ("config.toml", "encryption.pub"):
        st = (etc / name).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, gid, 0o640), name
    assert list(boot.iterdir()) == []

    shutil.rmtree(tmp_path / "jail")
    stage(GOOD.replace("front-desk-3", "front desk"))  # no spaces in a device id
    result = in_chroot(installed, tmp_path, f"{program} || echo exit=$?")
    assert "exit=78" in result.stdout, result.stdout + result.stderr
    assert (tmp_path / "jail/var/lib/edge-recorder/provision-error").exists()
    assert (boot / "edge-recorder.toml.rejected").exists()


# -- the script itself ---------------------------------------------------------------------------


def test_every_script_passes_shellcheck():
    shellcheck = tool("shellcheck", "shellcheck")
    scripts = [
        path
        for folder in (REPO / "images", REPO / "systemd")
        for path in sorted(folder.rglob("*"))
        if path.is_file() and (path.suffix == ".sh" or path.read_bytes().startswith(b"#!"))
    ]
    assert INSTALL in scripts
    result = run(shellcheck, "--severity=style", *scripts)
    assert result.returncode == 0, result.stdout
    assert os.access(INSTALL, os.X_OK)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], exits.USAGE, "give exactly one of --wheel FILE and --from-source DIR"),
        (
            ["--wheel", "w.whl", "--from-source", "."],
            exits.USAGE,
            "give exactly one of --wheel FILE and --from-source DIR",
        ),
        (["--wheel", "missing.whl"], exits.NOINPUT, "no such wheel: missing.whl"),
        (["--wheel", "w.whl", "--no-index"], exits.USAGE, "--no-index needs --wheelhouse DIR"),
        (["--wheel", "w.whl", "--root", "nowhere"], exits.NOINPUT, "no such root directory: nowhere"),
        (["--wheel", "w.whl", "--wheelhouse", "nowhere"], exits.NOINPUT, "no such wheelhouse: nowhere"),
        (["--from-source", "."], exits.NOINPUT, ". has no pyproject.toml"),
        (["--bogus"], exits.USAGE, "unknown argument: --bogus"),
        (["--wheel"], exits.USAGE, "--wheel needs a value"),
        (["--wheel", ""], exits.USAGE, "--wheel needs a value"),
        (["--from-source"], exits.USAGE, "--from-source needs a value"),
        (["--wheel", "w.whl", "--root"], exits.USAGE, "--root needs a value"),
        (["--wheel", "w.whl", "--wheelhouse"], exits.USAGE, "--wheelhouse needs a value"),
        (["--wheel", "w.whl", "--python"], exits.USAGE, "--python needs a value"),
        (["--wheel", "w.whl", "--update-key"], exits.USAGE, "--update-key needs a value"),
        (["--wheel", "w.whl", "--update-key", "missing.pub"], exits.NOINPUT, "no such update key: missing.pub"),
        (
            ["--wheel", "w.whl", "--update-key", "w.whl"],
            exits.DATAERR,
            "w.whl is not a minisign public key (minisign -G makes one)",
        ),
        (["--switch"], exits.USAGE, "--switch needs a value"),
        (["--switch", "0.1.0", "--prepare"], exits.USAGE, "give at most one of --prepare and --switch SLOT"),
        (
            ["--switch", "0.1.0", "--wheel", "w.whl"],
            exits.USAGE,
            "--switch SLOT installs nothing new: give no --wheel, --from-source, --wheelhouse or --no-index with it",
        ),
        (["--switch", "../../etc"], exits.USAGE, "not a slot name: ../../etc"),
        (["--switch", "0.1.0", "--root", "."], exits.NOINPUT, "no such slot: {cwd}/opt/edge-recorder/slots/0.1.0"),
        (["--switch", "0.1.0", "--catalog-copy", "/c.before"], exits.USAGE, "--catalog-copy needs --catalog FILE"),
        (
            ["--wheel", "w.whl", "--prepare", "--catalog", "/c"],
            exits.USAGE,
            "--prepare switches nothing: give --catalog with --switch SLOT",
        ),
        (["--switch", "0.1.0", "--catalog", "catalog.sqlite3"], exits.USAGE, "not a path on the box: catalog.sqlite3"),
    ],
)
def test_wrong_arguments_are_refused_before_anything_is_done(tmp_path, args, code, message):
    """One line naming the problem (the usage after it for a wrong set of options), nothing
    after the message on its line."""
    (tmp_path / "w.whl").write_bytes(b"")
    result = run(INSTALL, *args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"install.sh: error: {message.format(cwd=tmp_path.resolve())}", result.stderr
    assert len(lines) == 1 or lines[1] == "usage:", result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.whl"]


def test_a_staged_install_refuses_a_target_with_another_python(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3").symlink_to("python3.13")  # Debian 13
    (tmp_path / "w.whl").write_bytes(b"")
    result = run(INSTALL, "--root", root, "--wheel", tmp_path / "w.whl", "--python", PYTHON)
    assert result.returncode == 1 and "has python3.13" in result.stderr, result.stderr
    assert sorted(p.name for p in root.rglob("*")) == ["bin", "python3", "usr"]


def test_a_staged_install_refuses_a_target_for_another_cpu(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    header = bytearray(Path(os.path.realpath(PYTHON)).read_bytes()[:64])
    header[18:20] = (0xB7 if header[18:20] != b"\xb7\x00" else 0x3E).to_bytes(2, "little")  # aarch64 / x86-64
    (root / f"usr/bin/python{version}").write_bytes(bytes(header))
    (root / "usr/bin/python3").symlink_to(f"python{version}")
    (tmp_path / "w.whl").write_bytes(b"")
    result = run(INSTALL, "--root", root, "--wheel", tmp_path / "w.whl", "--python", PYTHON)
    assert result.returncode == 1 and "another CPU architecture" in result.stderr, result.stderr


# -- an install from before slots ----------------------------------------------------------------


def box_state(root: Path) -> dict[str, bytes]:
    """The box's own files: config, catalog, spool."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for folder in ("etc/edge-recorder", "var/lib/edge-recorder")
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


def test_an_install_from_before_slots_moves_into_a_slot_keeping_config_catalog_and_spool(installed, tmp_path):
    """images/install.sh before slots made the venv /opt/edge-recorder itself; installing over such
    a box moves it into the layout and leaves /etc and /var/lib as they were."""
    from firmware.catalog import Catalog

    root = tmp_path / "root"
    old = root / "opt/edge-recorder"
    result = run(PYTHON, "-m", "venv", old)
    assert result.returncode == 0, result.stderr
    result = run(old / "bin/python", "-m", "pip", "install", "-q", "--no-index", "--no-deps", installed.wheel)
    assert result.returncode == 0, result.stderr
    (root / "usr/local/bin").mkdir(parents=True)
    (root / COMMAND_LINK).symlink_to(PROGRAM)
    (root / "etc/edge-recorder").mkdir(parents=True)
    (root / "etc/edge-recorder/config.toml").write_text('[device]\nid = "box-7"\n')
    state = root / "var/lib/edge-recorder"
    catalog = Catalog(state / "catalog.sqlite3")
    catalog.insert(
        {"id": "RE1", "name": "RE1", "call_id": "CA1", "source": "cli", "status": "completed", "state": "done",
         "format": "wav", "sample_rate": 8000, "channels": 1, "track": "both", "options": {},
         "start_time": "2026-01-01T00:00:00Z", "path": "spool/RE1.wav"}
    )  # fmt: skip
    catalog.close()
    (state / "spool").mkdir()
    (state / "spool/RE1.wav").write_bytes(os.urandom(4096))
    before = box_state(root)
    minisign = tool("minisign", "minisign")
    result = run(minisign, "-G", "-W", "-p", tmp_path / "update.pub", "-s", tmp_path / "update.key")
    assert result.returncode == 0, result.stderr

    result = install(
        root, "--wheel", installed.wheel, "--wheelhouse", installed.wheelhouse, "--no-index",
        "--update-key", tmp_path / "update.pub",
    )  # fmt: skip

    assert "moving the install from before slots (a venv at /opt/edge-recorder)" in result.stderr
    assert top_level(root) == {
        "slots": "",
        "current": "slots/0.1.0",
        "bin": "current/bin",
        "lib": "current/lib",
        "pyvenv.cfg": "current/pyvenv.cfg",
    }
    assert slots(root) == ["0.1.0"]
    after = box_state(root)
    key = after.pop("etc/edge-recorder/update.pub")
    assert after == before
    assert key == (tmp_path / "update.pub").read_bytes()
    assert (root / "etc/edge-recorder/update.pub").stat().st_mode & 0o777 == 0o644
    assert os.readlink(root / COMMAND_LINK) == PROGRAM
    version = run(root / "opt/edge-recorder/bin/python", "-m", "firmware.cli.main", "--version")
    assert version.stdout.strip() == "edge-recorder 0.1.0", version.stderr


# -- again -----------------------------------------------------------------------------------------


def test_installing_again_keeps_the_config_and_the_layout(installed, tmp_path):
    """Near the end of this file: it installs over the module's root (from source this time)."""
    config = installed.root / "etc/edge-recorder/config.toml"
    config.write_text('[device]\nid = "box-7"\n')  # the box's own config, provisioned earlier
    before = layout(installed.root)

    stale = installed.source / "build/lib/firmware/deleted_module.py"  # left by an earlier setuptools build
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("")
    source_before = sorted(path.relative_to(installed.source) for path in installed.source.rglob("*"))

    result = install(
        installed.root, "--from-source", installed.source, "--wheelhouse", installed.wheelhouse, "--no-index"
    )

    # The wheel was built from a copy: nothing written into the source, the stale module not shipped.
    assert sorted(path.relative_to(installed.source) for path in installed.source.rglob("*")) == source_before
    assert not list(installed.root.glob("opt/edge-recorder/lib/python3*/site-packages/firmware/deleted_module.py"))

    assert "keeping the existing" in result.stderr
    assert config.read_text() == '[device]\nid = "box-7"\n'
    after = layout(installed.root)
    assert after == before
    # The same version again goes into a slot of its own; the first one is kept as previous.
    assert top_level(installed.root)["current"] == "slots/0.1.0-2"
    assert top_level(installed.root)["previous"] == "slots/0.1.0"
    assert slots(installed.root) == ["0.1.0", "0.1.0-2"]
    # An install over a running version is a switch like an update's: pending until the new one confirms it.
    switch = read_state(Layout(installed.root))
    assert switch is not None and switch.phase is Phase.PENDING
    assert (switch.slot, switch.version, switch.previous_slot, switch.starts) == ("0.1.0-2", "0.1.0", "0.1.0", 0)
    assert (switch.catalog, switch.catalog_copy) == ("", "")
    assert "the switch to slots/0.1.0-2 (edge-recorder 0.1.0) is pending" in result.stderr
    program = installed.root / PROGRAM.lstrip("/")
    assert program.read_text().startswith("#!/opt/edge-recorder/slots/0.1.0-2/bin/python\n")
    venv_python = installed.root / "opt/edge-recorder/bin/python"
    assert interpreter(venv_python) == "/usr/bin/python3"
    version = run(venv_python, "-m", "firmware.cli.main", "--version")  # the machine's python3 as the target's
    assert version.stdout.strip() == "edge-recorder 0.1.0", version.stderr


def test_installing_again_leaves_another_edge_recorder_on_path_alone(installed):
    """Last in this file: it replaces the module's command link by a program of the box's own."""
    command = installed.root / COMMAND_LINK
    command.unlink()
    command.write_text("#!/bin/sh\necho the box's own\n")
    result = install(installed.root, "--wheel", installed.wheel, "--wheelhouse", installed.wheelhouse, "--no-index")
    assert not command.is_symlink() and command.read_text() == "#!/bin/sh\necho the box's own\n"
    assert f"note: {command} is not a link to {PROGRAM}: left as it is" in result.stderr, result.stderr
    # A third install keeps two slots: the new one and the one before; the oldest is gone.
    assert top_level(installed.root)["current"] == "slots/0.1.0-3"
    assert top_level(installed.root)["previous"] == "slots/0.1.0-2"
    assert slots(installed.root) == ["0.1.0-2", "0.1.0-3"]
