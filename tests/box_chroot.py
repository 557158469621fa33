"""A box's root file system, run as systemd would run it: the tests cannot run systemd here, so they play its
part with the real programs (tests/test_rollback.py, tests/test_update_mqtt.py, tests/test_update_interrupted.py).

A start is the unit's ``ExecStartPre=`` (the installed ``/usr/lib/edge-recorder/update-guard start``, as root)
and then its ``ExecStart=`` (the installed ``/opt/edge-recorder/bin/edge-recorder run --config
/etc/edge-recorder/config.toml``, as the daemon's user, in /run/edge-recorder). Both run chrooted into the box:
in a private mount namespace the box's /etc, /opt, /var and /run are bound into a throwaway root, with the
box's /usr laid over the machine's (overlayfs) so that the guard is where the unit names it. The box's boot id
is its ``/proc/sys/kernel/random/boot_id``, a plain file in the box's root bound over /proc in the chroot: a
reboot is a new id there. Needs root (chroot, mounts).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .programs import run, tool
from .releases import GUARD, PATH, STATE, TOP, install_box, make_state, own

PROGRAM = "/opt/edge-recorder/bin/edge-recorder run --config /etc/edge-recorder/config.toml"
NOTE = "var/lib/edge-recorder/update-confirmed"
BOOT_ID = "proc/sys/kernel/random/boot_id"
STATUS = "run/edge-recorder/status.json"


@contextmanager
def work_folder(prefix: str) -> Iterator[Path]:
    """A folder under /var/tmp for a module's boxes: the catalog's owner copies the catalog during an update and
    must reach it (pytest's own folder is private to root)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix=prefix) as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


@dataclass
class Owner:
    uid: int
    gid: int


def daemon_user(root: Path) -> Owner:
    """The user the unit runs as, as systemd-sysusers made it in the box."""
    for line in (root / "etc/passwd").read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        if name == "edge-recorder":
            return Owner(int(uid), int(gid))
    raise AssertionError(f"no edge-recorder user in {root}/etc/passwd")


# -- the unit's steps, chrooted into the box ---------------------------------------------------------


def chrooted(
    root: Path, command: str, *, user: Owner | None = None, env: dict[str, str] | None = None, cwd: str = "/"
) -> list[str]:
    """The command line that runs ``command`` chrooted into ``root``, as root or as ``user``, in ``cwd``, with only
    PATH and ``env`` in its environment."""
    jail = root.parent / "jail"
    for name in ("usr", "etc", "opt", "var", "proc", "run", "dev", "tmp"):
        (jail / name).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        if not (jail / name).is_symlink():
            (jail / name).symlink_to(f"usr/{name}")
    userspec = f"--userspec={user.uid}:{user.gid} " if user else ""
    variables = " ".join(f"{key}={value}" for key, value in {"PATH": PATH, **(env or {})}.items())
    script = (
        "set -e; mount --make-rprivate /; "
        f"mount -t overlay overlay -o lowerdir={root}/usr:/usr {jail}/usr; "
        + "".join(f"mount --bind {root}/{name} {jail}/{name}; " for name in ("etc", "opt", "var", "proc", "run"))
        + f"mount --rbind /dev {jail}/dev; mount -t tmpfs tmpfs {jail}/tmp; "
        f"exec chroot {userspec}{jail} /usr/bin/env -i -C {cwd} {variables} {command}"
    )
    return [tool("unshare", "util-linux"), "--mount", "--fork", "sh", "-c", script]


def guard(root: Path, mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The update guard as the units run it: as root, at its installed path."""
    return run(*chrooted(root, f"/{GUARD} {mode}", env=env), timeout=60)


@dataclass
class Start:
    guard: subprocess.CompletedProcess[str]
    code: int | None  # the daemon's exit status; None when it was running until the test stopped it
    log: str  # its stderr: the journal
    status: dict  # its status file (/run/edge-recorder/status.json) as it was when it was stopped; {}: none


def start(root: Path, until: Callable[[Path], bool] | None = None, timeout: float = 60) -> Start:
    """One start of edge-recorder.service: ExecStartPre=, then ExecStart= as the unit's user in its working
    directory. The daemon runs until it exits, or until ``until(root)`` holds (then SIGTERM, as systemctl stop)."""
    before = guard(root, "start")
    assert before.returncode == 0, before.stderr
    status = root / STATUS
    status.unlink(missing_ok=True)
    env = {
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LG_WD": "/run/edge-recorder",
    }
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            chrooted(root, PROGRAM, user=daemon_user(root), env=env, cwd="/run/edge-recorder"),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        code = None
        deadline = time.monotonic() + timeout
        while (code := process.poll()) is None and not (until is not None and until(root)):
            assert time.monotonic() < deadline, "the daemon neither exited nor got there in time"
            time.sleep(0.1)
        document = read_status(root)
        if code is None:
            # unshare's child is the daemon (sh, chroot and env exec it): SIGTERM to it, as systemctl stop sends
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            for child in children:
                os.kill(int(child), signal.SIGTERM)
            process.wait(timeout=30)  # unshare returns once the daemon has finished its recordings and stopped
        log.seek(0)
        text = log.read()
    return Start(before, code, text, document)


def read_status(root: Path) -> dict:
    try:
        return json.loads((root / STATUS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def ready(root: Path) -> bool:
    return read_status(root).get("phase") == "ready"


def confirmed(root: Path) -> bool:
    return (root / NOTE).exists()


def status_lines(root: Path) -> list[str]:
    result = run(root / TOP / "bin/python", "-I", "-m", "firmware.cli.main", "update", "--status", "--root", root)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def make_box(root: Path, wheelhouse: Path, key: Path, config: str, audio_seconds: int) -> Owner:
    """0.1.0 installed into the empty folder ``root`` with ``config``, a catalog, a spool, a tone of
    ``audio_seconds`` for the simulated line (``[sim] audio = "/var/lib/edge-recorder/line.wav"``) and a boot id;
    the daemon's user, who owns its folders."""
    root.mkdir(mode=0o755, exist_ok=True)
    install_box(root, wheelhouse, key)
    (root / "etc/edge-recorder/config.toml").write_text(config)
    owner = daemon_user(root)
    make_state(root / STATE, owner.uid, owner.gid)
    tone = (0.1 * 32767 * np.sin(2 * np.pi * 440 * np.arange(audio_seconds * 16000) / 16000)).astype(np.int16)
    sf.write(root / STATE / "line.wav", tone, 16000, subtype="PCM_16")
    (root / "run/edge-recorder").mkdir(parents=True)
    own(root / STATE, owner.uid, owner.gid)
    own(root / "run/edge-recorder", owner.uid, owner.gid)
    (root / BOOT_ID).parent.mkdir(parents=True)
    (root / BOOT_ID).write_text(f"{uuid.uuid4()}\n")
    return owner
