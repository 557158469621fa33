"""images/pi-gen/: the pi-gen stage that installs edge-recorder into Raspberry Pi OS Lite, and
the driver (images/pi-gen/build.sh) that runs pi-gen.

The image build itself needs pi-gen on an arm64 machine (or one with qemu-user-static and
binfmt_misc) that reaches archive.raspberrypi.com, which this machine does not;
images/pi-gen/README.md says how to run it there. Checked here:

- the stage holds only names pi-gen acts on, its scripts are executable with pi-gen's shebang
  (pi-gen silently skips a run script that is not executable), prerun.sh starts from the
  previous stage, and the config builds stage0-2 (Lite) and then this stage;
- 00-packages covers every Debian package images/README.md and images/install.sh say a box
  needs at run time, read from those files, and 01-run.sh's build tools are the rest: what
  pyalsaaudio is compiled with;
- the driver: --help, and each refusal (wrong arguments 64, a missing input 66, not root 77, a
  machine that cannot run arm64 programs or lacks pi-gen's tools 69) is one line and comes
  before anything is written (binfmt_misc is a folder made by the test, so both 69s are reached
  on any machine); --prepare-only lays out a pi-gen tree as the stage expects it, and builds the
  wheel without writing into the checkout;
- the stage's 01-run.sh for real, on what the driver prepared: against a Debian 12 root file
  system that mmdebstrap makes from exactly the stage's 00-packages, with pi-gen's on_chroot
  played by a function that mounts what pi-gen's does (/proc, /dev, /sys, a tmpfs on /run and
  on /tmp) and enters the root with capsh, so that images/install.sh runs inside it with
  --root /, as in the image build. Twice, on two copies of the root: with a wheelhouse (every
  wheel built here, pyalsaaudio's too), where no build tools may be installed; and without one,
  where pip gets pyalsaaudio as source only, so that it is compiled inside the root with the
  tools 01-run.sh installs there from deb.debian.org, and which must be gone afterwards. The
  root has this machine's architecture (Debian amd64, not Raspberry Pi OS arm64) but the image's
  Debian 12, Python 3.11 and systemd. It needs root, mmdebstrap and deb.debian.org (about 2
  minutes); without mmdebstrap it is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.cli import exits

from .programs import run

REPO = Path(__file__).resolve().parents[1]
PIGEN = REPO / "images" / "pi-gen"
DRIVER = PIGEN / "build.sh"
STAGE = PIGEN / "stage-edge-recorder"
SUB_STAGE = STAGE / "00-edge-recorder"
RUN = SUB_STAGE / "01-run.sh"
AS_ROOT = os.geteuid() == 0
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# What pi-gen's build.sh does something with in a stage and in a sub-stage (its README, "How the
# build process works"); anything else is ignored by pi-gen, so a typo would be silent.
STAGE_FILES = {"prerun.sh", "EXPORT_IMAGE"}
SUB_STAGE_ENTRY = re.compile(r"\d\d-(run\.sh|run-chroot\.sh|packages|packages-nr|debconf|patches)|files")
DEBIAN_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# qemu-user-static's entry for arm64 ELF programs, as the kernel shows it in binfmt_misc.
QEMU_AARCH64 = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: PF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def packages(path: Path) -> list[str]:
    """A pi-gen NN-packages file as pi-gen reads it: comments removed, names split on space."""
    return [name for line in path.read_text().splitlines() for name in line.split("#", 1)[0].split()]


def bash_values(script: str, names: list[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """Variables after bash sources ``script`` (a pi-gen config or EXPORT_IMAGE)."""
    printed = "; ".join(f'printf "%s\\0" "${{{name}-}}"' for name in names)
    result = run("bash", "-ec", f'source "{script}"; {printed}', env=env)
    assert result.returncode == 0, result.stderr
    return dict(zip(names, result.stdout.split("\0")[:-1], strict=True))


# -- the stage follows pi-gen's conventions -------------------------------------------------------


def test_the_stage_holds_only_names_pi_gen_acts_on():
    for entry in STAGE.iterdir():
        if entry.is_dir():
            assert re.fullmatch(r"\d\d-[a-z0-9-]+", entry.name), f"pi-gen runs only NN-name sub-stages: {entry}"
            for item in entry.iterdir():
                assert SUB_STAGE_ENTRY.fullmatch(item.name), f"pi-gen ignores {item}"
        else:
            assert entry.name in STAGE_FILES, f"pi-gen ignores {entry} (or skips the stage, for SKIP)"
    assert (STAGE / "EXPORT_IMAGE").is_file(), "without EXPORT_IMAGE pi-gen exports no image of this stage"


def test_every_stage_script_is_executable_with_pi_gens_shebang():
    scripts = [STAGE / "prerun.sh", *sorted(STAGE.glob("*/[0-9][0-9]-run.sh"))]
    assert RUN in scripts
    for script in scripts:
        # pi-gen runs prerun.sh and NN-run.sh only when executable (`[ -x ... ]`), silently.
        assert os.access(script, os.X_OK), f"{script} is not executable: pi-gen would skip it"
        assert script.read_text().splitlines()[0] == "#!/bin/bash -e", script
    assert os.access(DRIVER, os.X_OK)
    assert DRIVER.read_text().startswith("#!/usr/bin/env bash\n")


def test_pi_gen_files_that_are_sourced_pass_shellcheck():
    """Scripts with a shebang or .sh are checked in tests/test_install.py; these are sourced."""
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.fail("shellcheck not found: install the Debian package 'shellcheck'")
    result = run(shellcheck, "--severity=style", "--shell=bash", PIGEN / "config", STAGE / "EXPORT_IMAGE")
    assert result.returncode == 0, result.stdout


def test_the_script_01_run_sh_writes_into_the_image_passes_shellcheck(tmp_path):
    """A here-document in 01-run.sh, which shellcheck does not look into."""
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.fail("shellcheck not found: install the Debian package 'shellcheck'")
    (script,) = re.findall(r"""^cat > "\$target/in-image\.sh" << 'EOF'\n(.*?)^EOF$""", RUN.read_text(), re.M | re.S)
    (tmp_path / "in-image.sh").write_text("#!/bin/bash -e\n" + script)
    result = run(shellcheck, "--severity=style", tmp_path / "in-image.sh")
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("rootfs_exists", [False, True])
def test_prerun_starts_from_the_previous_stage_once(tmp_path, rootfs_exists):
    rootfs = tmp_path / "rootfs"
    if rootfs_exists:
        rootfs.mkdir()
    calls = tmp_path / "calls"
    # copy_previous is pi-gen's (scripts/common): rsync of the previous stage's root file system.
    script = f'copy_previous() {{ echo copy_previous >> "{calls}"; }}; export -f copy_previous; "{STAGE}/prerun.sh"'
    result = run("bash", "-c", script, env={**os.environ, "ROOTFS_DIR": str(rootfs)})
    assert result.returncode == 0, result.stderr
    assert (calls.read_text() if calls.exists() else "") == ("" if rootfs_exists else "copy_previous\n")


def test_the_config_builds_raspberry_pi_os_lite_then_this_stage():
    names = ["IMG_NAME", "RELEASE", "STAGE_LIST", "DEPLOY_COMPRESSION", "FIRST_USER_NAME", "FIRST_USER_PASS"]
    names.append("DISABLE_FIRST_BOOT_USER_RENAME")
    config = bash_values(str(PIGEN / "config"), names)
    assert config["STAGE_LIST"].split() == ["stage0", "stage1", "stage2", STAGE.name]
    assert config["RELEASE"] == "bookworm"
    assert config["IMG_NAME"] and config["DEPLOY_COMPRESSION"] in {"none", "zip", "gz", "xz"}
    # pi-gen's own checks, which would stop the build after an hour of stage0-2 otherwise.
    assert re.fullmatch(r"[a-z][-a-z0-9_]*", config["FIRST_USER_NAME"] or "pi")
    if config["DISABLE_FIRST_BOOT_USER_RENAME"] == "1":
        assert config["FIRST_USER_PASS"], "pi-gen refuses DISABLE_FIRST_BOOT_USER_RENAME=1 without FIRST_USER_PASS"
    exported = bash_values(str(STAGE / "EXPORT_IMAGE"), ["IMG_SUFFIX"], env={"USE_QEMU": "0"})
    assert exported["IMG_SUFFIX"] == ""


# -- the packages a box needs ---------------------------------------------------------------------


def packages_a_box_needs() -> dict[str, set[str]]:
    """Debian packages named, by where they are named: images/README.md's `apt-get install` lines
    and "The root needs `...` installed", images/install.sh's "install X and Y" messages."""
    readme = (REPO / "images" / "README.md").read_text()
    install = (REPO / "images" / "install.sh").read_text()
    apt_get = set()
    for match in re.finditer(r"apt-get install((?:\s+-\S+)*)\s+([^#`\n]+)", readme):
        apt_get |= set(match.group(2).split())
    root_needs = {name for m in re.finditer(r"needs `([^`]+)`\s+installed", readme) for name in m.group(1).split()}
    messages = set()
    for m in re.finditer(r'die "[^"]*\binstall ([a-z0-9][a-z0-9.+-]*(?: and [a-z0-9][a-z0-9.+-]*)*)', install):
        messages |= set(m.group(1).split(" and "))
    return {"images/README.md apt-get": apt_get, "images/README.md root": root_needs, "install.sh": messages}


def build_tools() -> list[str]:
    """What 01-run.sh installs in the image, without a wheelhouse, for pip to compile pyalsaaudio."""
    (line,) = re.findall(r'^build_tools="([^"$]*)"$', RUN.read_text(), flags=re.M)
    return line.split()


def test_00_packages_covers_every_package_a_box_is_said_to_need_at_run_time():
    listed = packages(SUB_STAGE / "00-packages")
    assert len(listed) == len(set(listed)), listed
    tools = build_tools()
    assert tools and len(tools) == len(set(tools)), tools
    assert all(DEBIAN_PACKAGE.fullmatch(name) for name in listed + tools), (listed, tools)
    assert not set(tools) & set(listed), "a build tool in 00-packages stays in every image"
    for source, needed in packages_a_box_needs().items():
        assert needed, f"no package names found in {source}: has its wording changed?"
        assert all(DEBIAN_PACKAGE.fullmatch(name) for name in needed), (source, needed)
        missing = needed - set(listed) - set(tools)
        assert not missing, f"{source} names {sorted(missing)}, missing from 00-packages"
    # The box's own apt-get line is the run-time packages plus what pyalsaaudio is compiled with:
    # that rest is exactly what 01-run.sh installs when pip has to compile it.
    box = packages_a_box_needs()["images/README.md apt-get"]
    assert box - set(listed) == set(tools), "01-run.sh's build_tools differ from images/README.md's apt-get line"


def test_the_run_script_takes_the_install_artifact_of_this_repository():
    text = RUN.read_text()
    referenced = set(re.findall(r"files/([\w.*/-]+)", text))
    assert {"images/install.sh", "systemd", "dist/edge_recorder-*.whl", "wheelhouse"} <= referenced
    for path in referenced:
        # dist/ and wheelhouse/ are built (pip wheel); the rest is this repository's.
        if path.split("/")[0] not in {"dist", "wheelhouse"}:
            assert (REPO / path).exists(), f"01-run.sh copies files/{path}, but there is no {path} here"
    name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    assert "dist/" + re.sub(r"[-_.]+", "_", name) + "-*.whl" in referenced  # a wheel's file name


# -- the driver's refusals ------------------------------------------------------------------------


def driver_options() -> set[str]:
    return set(re.findall(r"^\s+(?:-h \| )?(--[a-z-]+)(?: \|[^)]*)?\)", DRIVER.read_text(), flags=re.M))


def test_help_names_every_option_and_so_does_the_readme():
    result = run(DRIVER, "--help")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("usage:\n   sudo images/pi-gen/build.sh "), result.stdout
    readme = (PIGEN / "README.md").read_text()
    options = driver_options()
    assert {"--pi-gen", "--ref", "--config", "--wheelhouse", "--docker", "--prepare-only"} <= options
    for option in options - {"--help"}:
        assert option in result.stdout, option
        assert f"`{option}" in readme, f"images/pi-gen/README.md does not mention {option}"


def snapshot(tmp_path: Path) -> dict[str, object]:
    """What a refused run must leave as it was: the test's directory, this checkout's build
    outputs and images/pi-gen."""

    def tree(path: Path) -> list[str]:
        return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []

    return {
        "tmp": tree(tmp_path),
        "pi-gen default": (REPO / "build" / "pi-gen").exists(),
        "dist": tree(REPO / "dist"),
        "images/pi-gen": tree(PIGEN),
    }


def refused(tmp_path: Path, args: list[str], code: int, message: str, prefix: tuple[str, ...] = (), **kwargs) -> None:
    """The driver exits with ``code`` and one line naming ``message``, and writes nothing."""
    before = snapshot(tmp_path)
    result = run(*prefix, DRIVER, *args, cwd=tmp_path, **kwargs)
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("build.sh: error: ") and message in lines[0], result.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown argument: --bogus"),
        (["--pi-gen"], "--pi-gen needs a value"),
        (["--config", ""], "--config needs a value"),
        (["--wheelhouse", "missing", "--build-wheelhouse"], "not both"),
        (["--docker", "--prepare-only"], "not both"),
        (["--pi-gen", "with space/pi-gen"], "must not contain a space"),
    ],
)
def test_wrong_arguments_are_refused_with_64(tmp_path, args, message):
    refused(tmp_path, args, exits.USAGE, message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "missing.conf"], "no such config: missing.conf"),
        (["--wheelhouse", "missing"], "no such wheelhouse: missing"),
        (["--pi-gen", "empty"], "empty is not a pi-gen checkout"),
    ],
)
def test_a_missing_input_is_refused_with_66(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    refused(tmp_path, args, exits.NOINPUT, message)


def test_building_without_root_is_refused_with_77(tmp_path):
    prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups") if AS_ROOT else ()
    refused(tmp_path, ["--pi-gen", str(tmp_path / "pi-gen")], 77, "must run as root", prefix=prefix)


def bin_dir(tmp_path: Path) -> Path:
    """A PATH with the shell basics the driver uses, and none of pi-gen's tools."""
    path = tmp_path / "bin"
    path.mkdir()
    for name in ("bash", "env", "dirname", "uname", "id", "grep", "sed"):
        (path / name).symlink_to(shutil.which(name))
    return path


def binfmt_misc(tmp_path: Path, entries: dict[str, str], env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the driver's binfmt_misc a folder laid out as the
    kernel's: register, status, and a file per registered format."""
    folder = tmp_path / "binfmt_misc"
    folder.mkdir()
    (folder / "register").write_text("")
    (folder / "status").write_text("enabled\n")
    for name, text in entries.items():
        (folder / name).write_text(text)
    return {**(os.environ if env is None else env), "PI_GEN_BINFMT_MISC": str(folder)}


@pytest.mark.skipif(os.uname().machine == "aarch64", reason="an arm64 machine runs arm64 programs")
@pytest.mark.skipif(not AS_ROOT, reason="the root check comes first")
@pytest.mark.parametrize(
    "entries",
    [
        {},
        {"qemu-aarch64": QEMU_AARCH64.replace("enabled", "disabled", 1)},
        # Without F the kernel looks the interpreter up when a program starts: inside the chroot,
        # where it is not.
        {"qemu-aarch64": QEMU_AARCH64.replace("flags: PF", "flags: P")},
        {"qemu-arm": QEMU_AARCH64.replace("aarch64", "arm").replace("0200b700", "02002800")},
    ],
    ids=["nothing-registered", "aarch64-disabled", "aarch64-without-flag-F", "only-32-bit-arm"],
)
def test_a_machine_that_cannot_run_arm64_programs_is_refused_with_69(tmp_path, entries):
    env = binfmt_misc(tmp_path, entries)
    refused(tmp_path, ["--pi-gen", str(tmp_path / "pi-gen")], exits.UNAVAILABLE, "cannot run arm64 programs", env=env)


def needs(mode: str) -> list[str]:
    """The Debian packages in the driver's COMMAND:PACKAGE list for a mode ("docker", "native")."""
    text = DRIVER.read_text()
    start = text.index('if [ "$docker" = 1 ]; then\n    needs=(')
    docker, native = re.findall(r"needs=\(([^)]*)\)", text[start:])[:2]
    return [pair.split(":")[1] for pair in (docker if mode == "docker" else native).split()]


@pytest.mark.skipif(not AS_ROOT, reason="the root check comes first")
def test_a_machine_without_pi_gens_tools_is_refused_with_69_and_the_packages_to_install(tmp_path):
    # arm64 programs run (qemu-user-static registered as Debian's package does), so that the
    # check for the tools is reached on any machine.
    env = binfmt_misc(tmp_path, {"qemu-aarch64": QEMU_AARCH64}, env={**os.environ, "PATH": str(bin_dir(tmp_path))})
    message = "missing programs, install them with: apt-get install " + " ".join(needs("native"))
    refused(tmp_path, [], exits.UNAVAILABLE, message, env=env)  # the default --pi-gen build/pi-gen


def test_docker_without_docker_is_refused_with_69(tmp_path):
    env = binfmt_misc(tmp_path, {"qemu-aarch64": QEMU_AARCH64}, env={**os.environ, "PATH": str(bin_dir(tmp_path))})
    message = "apt-get install " + " ".join(needs("docker"))
    refused(tmp_path, ["--docker", "--pi-gen", str(tmp_path / "pi-gen")], exits.UNAVAILABLE, message, env=env)


@pytest.mark.skipif(os.uname().machine == "aarch64", reason="on arm64 the wheelhouse is built")
def test_an_arm64_wheelhouse_is_not_built_on_another_machine(tmp_path):
    refused(tmp_path, ["--build-wheelhouse", "--prepare-only"], exits.UNAVAILABLE, "not for the Pi")


def test_the_readme_lists_pi_gens_dependencies_as_the_driver_checks_them():
    readme = (PIGEN / "README.md").read_text()
    lines = [
        set(m.group(1).replace("\\\n", " ").split()) for m in re.finditer(r"apt-get install -y ((?:.*\\\n)*.*)", readme)
    ]
    assert any(set(needs("native")) <= line for line in lines), "the README's apt-get line misses a driver need"


# -- --prepare-only: the pi-gen tree as the stage expects it -----------------------------------------


def pi_gen_tree(path: Path) -> Path:
    """Where pi-gen's checkout would be: the driver only checks for and writes these."""
    (path / "scripts").mkdir(parents=True)
    (path / "stage2").mkdir()
    (path / "build.sh").write_text("#!/bin/bash -e\nexport ARCH=arm64\n")
    (path / "scripts" / "common").write_text("")
    return path


def prepare(pi_gen: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    result = run(DRIVER, "--prepare-only", "--pi-gen", pi_gen, *args)
    assert result.returncode == 0, result.stderr
    return result


def same_files(a: Path, b: Path) -> bool:
    def files(root: Path) -> dict[str, tuple[bytes, bool]]:
        return {
            str(p.relative_to(root)): (p.read_bytes(), os.access(p, os.X_OK)) for p in root.rglob("*") if p.is_file()
        }

    return files(a) == files(b)


def test_prepare_only_lays_out_the_stage_with_the_install_artifact(tmp_path):
    pi_gen = pi_gen_tree(tmp_path / "pi-gen")
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "some-1.0-py3-none-any.whl").write_bytes(b"wheel")
    stale = pi_gen / STAGE.name / "stale"
    stale.parent.mkdir()
    stale.write_text("from an earlier build")

    result = prepare(pi_gen, "--wheelhouse", wheelhouse)
    assert "note:" not in result.stderr
    stage = pi_gen / STAGE.name
    files = stage / SUB_STAGE.name / "files"
    assert not stale.exists()
    shutil.move(files, tmp_path / "files")
    assert same_files(stage, STAGE), "the stage is not copied as it is in images/pi-gen"
    files = tmp_path / "files"
    assert (pi_gen / "config").read_bytes() == (PIGEN / "config").read_bytes()
    assert (pi_gen / "stage2" / "SKIP_IMAGES").exists()
    assert (files / "images" / "install.sh").read_bytes() == (REPO / "images" / "install.sh").read_bytes()
    assert os.access(files / "images" / "install.sh", os.X_OK)
    assert sorted(p.name for p in (files / "images").iterdir()) == ["install.sh", "mender"]
    module = files / "images" / "mender" / "edge-recorder"  # the Mender Update Module, installed beside the guard
    assert module.read_bytes() == (REPO / "images" / "mender" / "edge-recorder").read_bytes()
    assert os.access(module, os.X_OK)
    assert same_files(files / "systemd", REPO / "systemd")
    assert same_files(files / "wheelhouse", wheelhouse)
    (wheel,) = (files / "dist").iterdir()
    assert wheel.name == f"edge_recorder-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        assert f"edge_recorder-{VERSION}.dist-info/entry_points.txt" in archive.namelist()


def checkout_copy(to: Path) -> Path:
    """What the driver uses of a checkout (images/, systemd/, the wheel's sources), with this
    checkout's .venv, which the driver builds the wheel with."""
    to.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, to / name)
    for name in ("images", "systemd", "firmware", "hal"):
        shutil.copytree(REPO / name, to / name, ignore=shutil.ignore_patterns("__pycache__"))
    if (REPO / ".venv").is_dir():
        (to / ".venv").symlink_to(REPO / ".venv")
    return to


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``root`` with its modification time and size: a file written, or an
    entry added to or removed from a folder, shows."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            info = (Path(folder) / name).lstat()
            state[os.path.relpath(Path(folder) / name, root)] = (info.st_mtime_ns, info.st_size)
    return state


def test_preparing_builds_the_wheel_without_writing_into_the_checkout(tmp_path):
    checkout = checkout_copy(tmp_path / "checkout")
    # What an earlier `pip wheel .` in the checkout left: setuptools packs build/lib as it finds it,
    # a module deleted from firmware/ since then included.
    stale = checkout / "build" / "lib" / "firmware" / "deleted_module.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# deleted from firmware/ since the last build\n")
    before = tree_state(checkout)
    pi_gen = pi_gen_tree(tmp_path / "pi-gen")

    result = run(checkout / "images" / "pi-gen" / "build.sh", "--prepare-only", "--pi-gen", pi_gen)
    assert result.returncode == 0, result.stderr
    assert not list(checkout.glob("*.egg-info")), "setuptools wrote into the checkout"
    assert tree_state(checkout) == before, "the checkout changed (build/, *.egg-info)"
    (wheel,) = (pi_gen / STAGE.name / SUB_STAGE.name / "files" / "dist").iterdir()
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "firmware/cli/main.py" in names
    assert "firmware/deleted_module.py" not in names, "the wheel packs the checkout's stale build/lib"


def test_the_run_script_refuses_an_incomplete_files_folder(tmp_path):
    stage = tmp_path / "stage"
    shutil.copytree(SUB_STAGE, stage)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    calls = tmp_path / "calls"
    script = f'on_chroot() {{ echo on_chroot >> "{calls}"; }}; export -f on_chroot; ./01-run.sh'
    result = run("bash", "-c", script, cwd=stage, env={**os.environ, "ROOTFS_DIR": str(rootfs)})
    assert result.returncode == exits.NOINPUT, result.stderr
    assert result.stderr.startswith("01-run.sh: error: ") and len(result.stderr.splitlines()) == 1
    assert list(rootfs.iterdir()) == [] and not calls.exists()


# -- 01-run.sh for real, inside a Debian 12 root made from 00-packages --------------------------------

# pi-gen's on_chroot (scripts/common) mounts these, then runs bash -e inside the root with capsh
# (stdin is the script). This one does the same, once per mount, in the test's private mount
# namespace, so that nothing stays mounted.
ON_CHROOT = r"""
on_chroot() {
  mountpoint -q "$ROOTFS_DIR/proc" || mount -t proc proc "$ROOTFS_DIR/proc"
  mountpoint -q "$ROOTFS_DIR/dev" || mount --rbind /dev "$ROOTFS_DIR/dev"
  mountpoint -q "$ROOTFS_DIR/sys" || mount --rbind /sys "$ROOTFS_DIR/sys"
  mountpoint -q "$ROOTFS_DIR/run" || mount -t tmpfs tmpfs "$ROOTFS_DIR/run"
  mountpoint -q "$ROOTFS_DIR/tmp" || mount -t tmpfs tmpfs "$ROOTFS_DIR/tmp"
  capsh --drop=cap_setfcap "--chroot=$ROOTFS_DIR/" -- -e "$@"
}
export -f on_chroot
"""
# Asked inside the root afterwards, each answer after a marker line.
QUESTIONS = """
echo @version; /opt/edge-recorder/bin/edge-recorder --version
echo @check; /opt/edge-recorder/bin/edge-recorder config check /etc/edge-recorder/config.toml
echo @alsaaudio; /opt/edge-recorder/bin/python -c 'import alsaaudio; print(alsaaudio.__file__)'
echo @enabled; systemctl is-enabled edge-recorder.service edge-recorder-provision.service
echo @groups; id -nG edge-recorder
echo @config; stat -c '%a %U:%G' /etc/edge-recorder /etc/edge-recorder/config.toml
echo @compilers; command -v cc gcc || true
"""
SYSTEM_DIRS = ("proc", "sys", "dev", "run", "tmp")
# Where apt and dpkg keep their records: installing and purging the build tools leaves these
# changed, and nothing else.
PACKAGE_RECORDS = ("var/cache/apt/", "var/cache/debconf/", "var/cache/ldconfig/", "var/lib/apt/", "var/lib/dpkg/")
PACKAGE_RECORDS += ("var/log/alternatives.log", "var/log/apt/", "var/log/dpkg.log")
# Stands in for PyPI inside the root when there is no wheelhouse (PIP_FIND_LINKS).
PIP_INDEX = "var/tmp/pip-index"


def root_paths(root: Path) -> set[str]:
    paths = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] not in SYSTEM_DIRS or len(rel.parts) == 1:
            paths.add(str(rel))
    return paths


def installed_packages(root: Path) -> set[str]:
    """The packages dpkg's status file in ``root`` says are installed."""
    status = (root / "var/lib/dpkg/status").read_text()
    out = set()
    for stanza in status.split("\n\n"):
        package = re.search(r"^Package: (\S+)", stanza, re.M)
        if package and re.search(r"^Status: \S+ \S+ installed$", stanza, re.M):
            out.add(package.group(1))
    return out


def answers(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    key = ""
    for line in stdout.splitlines():
        if line.startswith("@"):
            key = line[1:]
            out[key] = []
        elif key:
            out[key].append(line)
    return out


def mounted_below(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mounts").read_text().splitlines() if str(path) in line]


@dataclass
class DebianRoot:
    root: Path  # made by mmdebstrap from 00-packages; each run gets a copy
    sub_stage: Path  # 00-edge-recorder with files/ as the driver prepared it, no wheelhouse
    wheels: Path  # every dependency's wheel, built here, pyalsaaudio's too
    alsa_source: Path  # pyalsaaudio's source archive


@dataclass
class ImageRoot:
    root: Path
    files: Path
    with_wheelhouse: bool
    result: subprocess.CompletedProcess[str]
    answers: dict[str, list[str]]
    added: set[str]
    removed: set[str]
    packages_before: set[str]
    packages_after: set[str]
    dpkg_log: list[str]  # what dpkg logged during the run


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory):
    if not AS_ROOT:
        pytest.skip("mmdebstrap into a directory, chroot and mounts need root")
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("capsh", "libcap2-bin"), ("unshare", "util-linux")):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found: install the Debian package '{package}' to run 01-run.sh for real")
    work = tmp_path_factory.mktemp("pigen")
    root = work / "rootfs"
    release = bash_values(str(PIGEN / "config"), ["RELEASE"])["RELEASE"]
    include = "--include=" + ",".join(packages(SUB_STAGE / "00-packages"))
    # pi-gen's roots keep the package lists of stage0's apt-get update, which 01-run.sh's
    # apt-get install relies on: mmdebstrap would remove them.
    keep_lists = "--skip=cleanup/apt/lists"
    debootstrap = subprocess.Popen(
        ["mmdebstrap", "--variant=minbase", keep_lists, include, release, str(root), "http://deb.debian.org/debian"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pi_gen = pi_gen_tree(work / "pi-gen")
        prepare(pi_gen)
        sub_stage = pi_gen / STAGE.name / SUB_STAGE.name
        # Every dependency's wheel, built here (same Python 3.11 and glibc as the root), and
        # pyalsaaudio's source, which is all PyPI has of it.
        wheels = work / "wheels"
        (wheel,) = (sub_stage / "files" / "dist").glob("edge_recorder-*.whl")
        result = run(sys.executable, "-m", "pip", "wheel", "-q", "-w", wheels, wheel, "setuptools")
        assert result.returncode == 0, result.stderr
        (alsa,) = wheels.glob("pyalsaaudio-*.whl")
        sources = work / "sources"
        pip_download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        result = run(*pip_download, "-d", sources, "pyalsaaudio==" + alsa.name.split("-")[1])
        assert result.returncode == 0, result.stderr
        (alsa_source,) = sources.iterdir()
        log, _ = debootstrap.communicate(timeout=900)
        assert debootstrap.returncode == 0, log
    finally:
        if debootstrap.poll() is None:
            debootstrap.kill()
            debootstrap.wait()
    yield DebianRoot(root, sub_stage, wheels, alsa_source)
    shutil.rmtree(root)


@pytest.fixture(scope="module", params=["wheelhouse", "no-wheelhouse"])
def image_root(request, debian_root):
    with_wheelhouse = request.param == "wheelhouse"
    work = debian_root.root.parent / request.param
    work.mkdir()
    root = work / "rootfs"
    result = run("cp", "-a", debian_root.root, root)
    assert result.returncode == 0, result.stderr
    sub_stage = shutil.copytree(debian_root.sub_stage, work / SUB_STAGE.name)
    files = sub_stage / "files"
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    env |= {"LANG": "C.UTF-8", "ROOTFS_DIR": str(root)}
    dpkg_log = root / "var/log/dpkg.log"
    log_before = dpkg_log.read_text() if dpkg_log.exists() else ""
    before, packages_before = root_paths(root), installed_packages(root)
    if with_wheelhouse:
        # As an arm64 wheelhouse is built on arm64: pyalsaaudio as a wheel, nothing to compile.
        shutil.copytree(debian_root.wheels, files / "wheelhouse")
    else:
        # pip would fetch from PyPI inside the image; a folder in the root plays PyPI (pip takes
        # PIP_* from its environment, which on_chroot passes on), with only pyalsaaudio's source,
        # as PyPI has it, so that it is compiled in the root with 01-run.sh's build tools.
        shutil.copytree(debian_root.wheels, root / PIP_INDEX, ignore=shutil.ignore_patterns("pyalsaaudio-*"))
        shutil.copy2(debian_root.alsa_source, root / PIP_INDEX)
        env |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/" + PIP_INDEX}

    steps = ["set -e", "mount --make-rprivate /", ON_CHROOT, f"cd {sub_stage}", "./01-run.sh"]
    script = "\n".join([*steps, "on_chroot <<'EOF'", QUESTIONS, "EOF"])
    result = run("unshare", "--mount", "--fork", "bash", "-c", script, env=env, timeout=900)
    shutil.rmtree(root / PIP_INDEX, ignore_errors=True)
    after = root_paths(root)
    assert not mounted_below(work), mounted_below(work)
    log_after = dpkg_log.read_text() if dpkg_log.exists() else ""
    assert log_after.startswith(log_before)
    yield ImageRoot(
        root,
        files,
        with_wheelhouse,
        result,
        answers(result.stdout),
        after - before,
        before - after,
        packages_before,
        installed_packages(root),
        log_after[len(log_before) :].splitlines(),
    )
    assert not mounted_below(work)
    shutil.rmtree(root)


def test_the_stage_installs_edge_recorder_inside_the_image(image_root):
    assert image_root.result.returncode == 0, image_root.result.stdout + image_root.result.stderr
    assert image_root.answers["version"] == [f"edge-recorder {VERSION}"]
    (check,) = image_root.answers["check"]
    assert check.startswith("/etc/edge-recorder/config.toml: ok"), check
    assert image_root.answers["enabled"] == ["enabled", "enabled"]


def test_pyalsaaudio_works_in_the_image(image_root):
    """From the wheelhouse's wheel, or compiled inside the image without one."""
    (module,) = image_root.answers["alsaaudio"]
    assert re.fullmatch(r"/opt/edge-recorder/lib/python3\.\d+/site-packages/alsaaudio\.cpython-.*\.so", module)


def test_build_tools_are_installed_only_without_a_wheelhouse_and_purged_after(image_root):
    # dpkg.log: "DATE TIME install gcc:amd64 <none> VERSION", "... remove gcc:amd64 VERSION <none>".
    actions = [line.split()[2:4] for line in image_root.dpkg_log]
    installed = {package.split(":")[0] for action, package in actions if action == "install"}
    removed = {package.split(":")[0] for action, package in actions if action == "remove"}
    if image_root.with_wheelhouse:
        assert image_root.dpkg_log == [], "dpkg ran although the wheelhouse has every wheel"
    else:
        assert set(build_tools()) <= installed, f"pyalsaaudio compiled without 01-run.sh's build tools: {installed}"
        assert installed <= removed, f"installed for the build and left in the image: {sorted(installed - removed)}"
    assert image_root.packages_after == image_root.packages_before
    assert image_root.answers["compilers"] == []


def test_the_venv_is_made_by_the_images_own_python(image_root):
    venv = image_root.root / "opt/edge-recorder"
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text().splitlines()
    assert os.readlink(venv / "bin/python") in {"python3", "/usr/bin/python3"}
    # the program of the version's own slot: /opt/edge-recorder/bin is the running slot's (current/bin)
    assert os.readlink(venv / "current").startswith("slots/")
    assert (venv / "bin/edge-recorder").read_text().startswith("#!/opt/edge-recorder/slots/")


def test_the_daemon_user_and_the_config_are_made_in_the_image(image_root):
    assert set(image_root.answers["groups"][0].split()) == {"edge-recorder", "audio", "gpio"}
    assert image_root.answers["config"] == ["750 root:edge-recorder", "640 root:edge-recorder"]


def test_the_install_leaves_nothing_else_in_the_image(image_root):
    added, removed = image_root.added, image_root.removed
    if not image_root.with_wheelhouse:  # the build tools came and went: apt's and dpkg's records show it
        added = {path for path in added if not (path + "/").startswith(PACKAGE_RECORDS)}
        removed = {path for path in removed if not (path + "/").startswith(PACKAGE_RECORDS)}
    assert removed == set()
    outside_venv = {path for path in added if not path.startswith("opt/edge-recorder/")}
    assert outside_venv == {
        "opt/edge-recorder",
        "usr/local/bin/edge-recorder",
        "usr/lib/systemd/system/edge-recorder.service",
        "usr/lib/systemd/system/edge-recorder-provision.service",
        "usr/lib/systemd/system/edge-recorder-rollback.service",  # OnFailure= of the service: an update rolled back
        "usr/lib/systemd/system/edge-recorder-update.service",  # updates over MQTT (started by the .path)
        "usr/lib/systemd/system/edge-recorder-update.path",
        "usr/lib/systemd/system/edge-recorder-update-card.service",  # updates from the boot partition
        "usr/lib/edge-recorder",
        "usr/lib/edge-recorder/update-guard",  # outside the slots, so a broken version cannot break it
        "usr/share/mender",  # the Mender Update Module (images/mender/README.md)
        "usr/share/mender/modules",
        "usr/share/mender/modules/v3",
        "usr/share/mender/modules/v3/edge-recorder",
        "usr/lib/sysusers.d/edge-recorder.conf",
        "usr/lib/tmpfiles.d/edge-recorder.conf",
        "etc/edge-recorder",
        "etc/edge-recorder/config.toml",
        "etc/systemd/system/multi-user.target.wants/edge-recorder.service",
        "etc/systemd/system/multi-user.target.wants/edge-recorder-provision.service",
        "etc/systemd/system/multi-user.target.wants/edge-recorder-update-card.service",
        "etc/systemd/system/paths.target.wants",
        "etc/systemd/system/paths.target.wants/edge-recorder-update.path",
    }
    # /var/tmp held the copy; /tmp had pi-gen's tmpfs over it, so nothing may be under it.
    assert not (image_root.root / "var/tmp/edge-recorder-install").exists()
    assert list((image_root.root / "tmp").iterdir()) == []
    assert image_root.files.is_dir()  # the stage's own files stay for a rebuild
