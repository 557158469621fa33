"""The files in ``systemd/`` as systemd 252 (Debian 12) reads them.

Each check runs the real systemd tool (``systemd-analyze``, ``systemd-sysusers``,
``systemd-tmpfiles``) against a throwaway root directory, so nothing on this machine is
touched and systemd need not be PID 1. A missing tool is a failure, not a skip: CI
installs the ``systemd`` package (run.sh does too).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.cli import exits

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edge-recorder.service"
ROLLBACK_UNIT = REPO / "systemd" / "edge-recorder-rollback.service"
GUARD = REPO / "systemd" / "update-guard"
UPDATE_UNIT = REPO / "systemd" / "edge-recorder-update.service"
UPDATE_PATH = REPO / "systemd" / "edge-recorder-update.path"
CARD_UNIT = REPO / "systemd" / "edge-recorder-update-card.service"
GUARD_PATH = "/usr/lib/edge-recorder/update-guard"  # where images/install.sh puts it
SYSUSERS = REPO / "systemd" / "edge-recorder.sysusers"
TMPFILES = REPO / "systemd" / "edge-recorder.tmpfiles"
EXPOSURE_LIMIT = 3.0

# /etc/passwd and /etc/group as a fresh Debian 12 has them (trimmed). Raspberry Pi OS also
# has a gpio group; a Debian development machine does not.
PASSWD = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP_DEBIAN = "root:x:0:\naudio:x:29:\nnogroup:x:65534:\n"
GROUP_RASPBERRY_PI_OS = GROUP_DEBIAN + "gpio:x:997:pi\n"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: install the Debian package 'systemd' (run.sh does)"
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values in file order (systemd keys may repeat, e.g. DeviceAllow=)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def user_db(path: Path) -> dict[str, list[str]]:
    """/etc/passwd or /etc/group as name -> fields."""
    return {fields[0]: fields for fields in (line.split(":") for line in path.read_text().splitlines())}


def install_root(tmp_path: Path, unit_text: str, *, guard: bool = True) -> Path:
    """A root directory that holds what ``verify`` looks at: the unit and the rollback unit its
    OnFailure= starts, the targets they are ordered against (the host's own unit files), and the
    programs they execute (the update guard as images/install.sh installs it, unless ``guard`` is
    False).

    /opt/edge-recorder/bin/edge-recorder is a placeholder script, for this verify test
    only: verify checks that ExecStart= names an executable, not what it does.
    """
    root = tmp_path / "root"
    units = root / "usr/lib/systemd/system"
    shutil.copytree("/usr/lib/systemd/system", units, symlinks=True)
    (units / UNIT.name).write_text(unit_text)
    shutil.copy2(ROLLBACK_UNIT, units / ROLLBACK_UNIT.name)
    program = root / "opt/edge-recorder/bin/edge-recorder"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n# placeholder for systemd-analyze verify only\nexit 0\n")
    program.chmod(0o755)
    if guard:
        (root / GUARD_PATH.lstrip("/")).parent.mkdir(parents=True)
        shutil.copy2(GUARD, root / GUARD_PATH.lstrip("/"))
        (root / GUARD_PATH.lstrip("/")).chmod(0o755)
    (root / "usr/bin").mkdir()
    (root / "bin").symlink_to("usr/bin")
    shutil.copy2(shutil.which("kill") or "/bin/kill", root / "usr/bin/kill")  # ExecReload=
    shutil.copy2(tool("systemctl"), root / "usr/bin/systemctl")  # the rollback unit's ExecStart=
    return root


def verify_problems(tmp_path: Path, unit_text: str, *, guard: bool = True) -> list[str]:
    """Everything ``systemd-analyze verify`` has to say about the unit and its rollback unit: it exits 0 on
    most mistakes (an unknown key or value is "ignoring"), so any output at all is a problem."""
    root = install_root(tmp_path, unit_text, guard=guard)
    result = run(tool("systemd-analyze"), "verify", "--man=no", f"--root={root}", UNIT.name, ROLLBACK_UNIT.name)
    problems = (result.stdout + result.stderr).splitlines()
    if result.returncode != 0:
        problems.append(f"exit status {result.returncode}")
    return problems


def exposure(tmp_path: Path, unit_text: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    unit = tmp_path / UNIT.name
    unit.write_text(unit_text)
    threshold = f"--threshold={round(EXPOSURE_LIMIT * 10)}"  # in tenths
    result = run(tool("systemd-analyze"), "security", "--offline=yes", threshold, "--no-pager", unit)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    return float(match.group(1)), result


def test_unit_passes_systemd_analyze_verify(tmp_path):
    assert verify_problems(tmp_path, UNIT.read_text()) == []


def test_verify_catches_a_broken_unit(tmp_path):
    broken = UNIT.read_text().replace("Type=notify", "Type=notifyy")
    assert broken != UNIT.read_text()
    problems = verify_problems(tmp_path, broken)
    assert any("service type" in p and "notifyy" in p for p in problems), problems


def test_verify_catches_a_missing_program(tmp_path):
    broken = UNIT.read_text().replace("/opt/edge-recorder/bin/edge-recorder", "/opt/edge-recorder/bin/nope")
    problems = verify_problems(tmp_path, broken)
    assert any("/opt/edge-recorder/bin/nope" in p and "not executable" in p for p in problems), problems


def test_verify_catches_a_missing_update_guard(tmp_path):
    problems = verify_problems(tmp_path, UNIT.read_text(), guard=False)
    assert any(GUARD_PATH in p and "not executable" in p for p in problems), problems


def test_unit_is_hardened_to_an_exposure_of_3_or_less(tmp_path):
    level, result = exposure(tmp_path, UNIT.read_text())
    assert level <= EXPOSURE_LIMIT, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_exposure_check_fails_without_the_hardening(tmp_path):
    bare = UNIT.read_text().split("# --- Hardening")[0]
    level, result = exposure(tmp_path, bare)
    assert level > EXPOSURE_LIMIT
    assert result.returncode != 0


def test_unit_keeps_what_the_daemon_relies_on():
    unit = unit_settings(UNIT.read_text())
    service = {key.removeprefix("Service."): values for key, values in unit.items() if key.startswith("Service.")}
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] and service["Restart"] == ["on-failure"]
    # A bad config exits EX_CONFIG; restarting would only loop.
    assert str(exits.CONFIG) in service["RestartPreventExitStatus"][0].split()
    assert service["ExecStart"] == ["/opt/edge-recorder/bin/edge-recorder run --config /etc/edge-recorder/config.toml"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"] and service["KillSignal"] == ["SIGTERM"]
    assert service["StateDirectory"] == ["edge-recorder"] and service["ConfigurationDirectory"] == ["edge-recorder"]
    # lgpio makes its notification pipes in the working directory: it must be writable,
    # i.e. one of the directories systemd makes writable under ProtectSystem=strict.
    writable = {f"/run/{d}" for d in service["RuntimeDirectory"]} | {f"/var/lib/{d}" for d in service["StateDirectory"]}
    assert service["WorkingDirectory"][0] in writable
    assert f"LG_WD={service['WorkingDirectory'][0]}" in service["Environment"]
    assert "PYTHONUNBUFFERED=1" in service["Environment"]
    assert sorted(service["DeviceAllow"]) == ["char-alsa rw", "char-gpiochip rw"]
    assert service["DevicePolicy"] == ["closed"] and "PrivateDevices" not in service
    # The update guard before each start: as root ("+", outside the sandbox), never failing the start ("-").
    assert service["ExecStartPre"] == [f"-+{GUARD_PATH} start"]
    assert unit["Unit.OnFailure"] == [ROLLBACK_UNIT.name]


def test_the_update_units_pass_systemd_analyze_verify(tmp_path):
    root = install_root(tmp_path, UNIT.read_text())
    units = (UPDATE_UNIT, UPDATE_PATH, CARD_UNIT)
    for unit in units:
        shutil.copy2(unit, root / "usr/lib/systemd/system" / unit.name)
    result = run(tool("systemd-analyze"), "verify", "--man=no", f"--root={root}", *(unit.name for unit in units))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_update_units_watch_where_the_daemon_and_the_installer_put_updates():
    """The path unit starts the inbox's updater for the requests the daemon writes; the card's updater runs at
    boot for a bundle on the boot partition, after provisioning and before the recorder."""
    from firmware.update import card, inbox

    path = unit_settings(UPDATE_PATH.read_text())
    assert path["Path.PathExistsGlob"] == [f"{inbox.INBOX}/*{inbox.SUFFIX}"]
    assert path["Path.Unit"] == [UPDATE_UNIT.name]
    daemon = unit_settings(UNIT.read_text())
    assert f"/var/lib/{daemon['Service.StateDirectory'][0]}" == str(inbox.INBOX.parent)
    service = unit_settings(UPDATE_UNIT.read_text())
    assert service["Service.ExecStart"] == ["/opt/edge-recorder/bin/edge-recorder update --pending inbox"]
    assert "Unit.Before" not in service  # the recorder's restarts never wait for an install
    boot = unit_settings(CARD_UNIT.read_text())
    assert boot["Service.ExecStart"] == ["/opt/edge-recorder/bin/edge-recorder update --pending card"]
    assert sorted(boot["Unit.ConditionPathExistsGlob"]) == sorted(f"|{folder}/{card.PATTERN}" for folder in card.BOOT)
    assert "edge-recorder.service" in boot["Unit.Before"][0].split()
    assert "edge-recorder-provision.service" in boot["Unit.After"][0].split()


def test_the_daemon_ending_to_restart_into_an_update_is_restarted():
    from firmware.daemon.app import RESTART_FOR_UPDATE

    settings = unit_settings(UNIT.read_text())
    assert str(RESTART_FOR_UPDATE) in settings["Service.RestartForceExitStatus"][0].split()
    assert str(RESTART_FOR_UPDATE) not in settings.get("Service.RestartPreventExitStatus", [""])[0].split()


def test_the_rollback_unit_restarts_the_service_only_when_the_guard_switched_back():
    unit = unit_settings(ROLLBACK_UNIT.read_text())
    assert unit["Service.Type"] == ["oneshot"]
    # ExecCondition=: exit 0 runs what follows; 1 to 254 skip it without failing the unit.
    assert unit["Service.ExecCondition"] == [f"{GUARD_PATH} failed"]
    assert unit["Service.ExecStart"] == [
        "/usr/bin/systemctl reset-failed edge-recorder.service",  # the start limit would refuse the restart
        "/usr/bin/systemctl --no-block restart edge-recorder.service",
    ]
    assert not any(key.startswith("Install.") for key in unit)  # started by OnFailure= only, never enabled


@pytest.mark.parametrize("group_file", [GROUP_DEBIAN, GROUP_RASPBERRY_PI_OS], ids=["debian", "raspberry-pi-os"])
def test_sysusers_creates_the_user_the_unit_runs_as(tmp_path, group_file):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(group_file)

    result = run(tool("systemd-sysusers"), f"--root={tmp_path}", SYSUSERS)
    assert result.returncode == 0, result.stderr
    assert all(line.startswith("Creating ") for line in result.stderr.splitlines()), result.stderr

    users, groups = user_db(tmp_path / "etc/passwd"), user_db(tmp_path / "etc/group")
    service = unit_settings(UNIT.read_text())
    user, group = service["Service.User"][0], service["Service.Group"][0]
    _, _, uid, gid, _, home, shell = users[user]
    assert groups[group][2] == gid and int(uid) < 1000 and int(gid) < 1000  # system user
    assert home == "/var/lib/edge-recorder" and shell == "/usr/sbin/nologin"
    for supplementary in service["Service.SupplementaryGroups"][0].split():
        assert user in groups[supplementary][3].split(","), supplementary
    assert groups["audio"][2] == "29"  # existing groups keep their ids
    if "gpio:x:997:" in group_file:
        assert groups["gpio"][2] == "997" and set(groups["gpio"][3].split(",")) == {"pi", user}


def test_tmpfiles_makes_the_config_readable_by_the_daemon_only(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP_DEBIAN)
    assert run(tool("systemd-sysusers"), f"--root={tmp_path}", SYSUSERS).returncode == 0
    config = tmp_path / "etc/edge-recorder/config.toml"
    config.parent.mkdir(mode=0o755)
    config.write_text('[device]\nid = "er-test"\n')
    config.chmod(0o600)  # as an installer's copy might leave it: unreadable to the daemon

    result = run(tool("systemd-tmpfiles"), f"--root={tmp_path}", "--create", TMPFILES)
    assert result.returncode == 0 and result.stderr == "", result.stderr

    gid = int(user_db(tmp_path / "etc/group")["edge-recorder"][2])
    for path, mode in ((config.parent, 0o750), (config, 0o640)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, gid, mode), path
    # The unit's ConfigurationDirectoryMode= must match, or systemd warns at every start.
    assert unit_settings(UNIT.read_text())["Service.ConfigurationDirectoryMode"] == ["0750"]


def syscall_groups() -> dict[str, list[str]]:
    """systemd's syscall groups (``@system-service`` ...) as systemd-analyze lists them."""
    result = run(tool("systemd-analyze"), "syscall-filter", "--no-pager")
    assert result.returncode == 0, result.stderr
    groups: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("@"):
            entries = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#") and line.startswith(" "):
            entries.append(line.strip())
    return groups


def allowed_syscalls(unit_text: str) -> set[str]:
    """What the unit's SystemCallFilter= lines leave allowed: an allow list, then ~ removals."""
    groups = syscall_groups()

    def expand(name: str) -> set[str]:
        return set().union(*(expand(n) for n in groups[name])) if name.startswith("@") else {name}

    allowed: set[str] = set()
    for value in unit_settings(unit_text)["Service.SystemCallFilter"]:
        names = set().union(*(expand(n) for n in value.removeprefix("~").split()))
        allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


# Runs the offline recorder (the same core, writers and finaliser as the daemon) inside the
# unit's sandbox as far as a process can set it up for itself: the kernel's
# memory-deny-write-execute (what MemoryDenyWriteExecute=yes enforces through seccomp) and a
# seccomp filter allowing only the syscalls the unit's SystemCallFilter= allows, others
# failing with EPERM (SystemCallErrorNumber=). It first checks that both really bite.
SANDBOX_RUNNER = """
import ctypes, ctypes.util, errno, json, mmap, os, runpy, sys

allowed = json.loads(os.environ.pop("ALLOWED_SYSCALLS"))
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    sys.exit(99)
seccomp = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
ctx = seccomp.seccomp_init(0x00050000 | errno.EPERM)  # SCMP_ACT_ERRNO(EPERM)
for name in allowed:
    number = seccomp.seccomp_syscall_resolve_name(name.encode())
    if number != -1:  # -1: no such call on this architecture
        seccomp.seccomp_rule_add(ctx, 0x7FFF0000, number, 0)  # SCMP_ACT_ALLOW
if seccomp.seccomp_load(ctx) != 0:
    sys.exit("seccomp_load failed")

try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("writable+executable memory is still allowed")
except OSError:
    pass
try:
    os.setpriority(os.PRIO_PROCESS, 0, 5)  # in @resources, which the unit removes
    sys.exit("setpriority is still allowed")
except PermissionError:
    pass

sys.argv = ["edge-recorder", *sys.argv[1:]]
runpy.run_module("firmware.cli.main", run_name="__main__")
"""


def test_recording_works_inside_the_units_sandbox(tmp_path):
    allowed = allowed_syscalls(UNIT.read_text())
    assert {"read", "openat", "mmap", "socket", "connect"} <= allowed
    assert not {"setpriority", "sched_setscheduler", "setuid", "reboot"} & allowed
    rate = 16000
    t = np.arange(3 * rate) / rate
    call = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 620 * t)], axis=1)
    sf.write(tmp_path / "call.wav", call, rate, subtype="PCM_16")

    result = subprocess.run(
        [sys.executable, "-c", SANDBOX_RUNNER, "record", "call.wav", "--out", "out", "--format", "mp3",
         "--channels", "dual", "--sample-rate", "8000"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "ALLOWED_SYSCALLS": json.dumps(sorted(allowed))},
    )  # fmt: skip
    if result.returncode == 99:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later has it)")
    assert result.returncode == 0, result.stderr
    assert '"recording.finished"' in result.stdout
    assert list((tmp_path / "out").glob("*.mp3"))
