"""Release bundles and the boxes they update, for tests/test_update.py and tests/test_rollback.py.

A release is built as the central side builds one: ``python -m firmware.update.build`` on a copy of
this checkout with its version changed (and, for a release that misbehaves, a few lines changed),
from a wheelhouse ``pip wheel`` makes once, signed with Debian's ``minisign``. A box is a root
file system that ``images/install.sh`` installs 0.1.0 into, as tests/test_install.py does, with a
config, a catalog (``firmware.catalog``) and a recording in the spool, owned by a user other than
root as the daemon's are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from firmware.catalog import Catalog
from firmware.update.slots import Layout
from firmware.update.state import Confirmed, read_state

from .programs import run, tool

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "images" / "install.sh"
PYTHON = Path("/usr/bin/python3")  # Debian's, as on the box
AS_ROOT = os.geteuid() == 0
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOP = "opt/edge-recorder"
STATE = "var/lib/edge-recorder"
GUARD = "usr/lib/edge-recorder/update-guard"


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def copy_source(to: Path, version: str, changes: dict[str, tuple[str, str]] | None = None) -> Path:
    """This checkout's files that a bundle is made of, with ``version`` where the version is said, and each
    file named in ``changes`` with its one ``old`` text replaced by ``new``."""
    to.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, to / name)
    for name in ("firmware", "hal", "systemd", "images"):
        shutil.copytree(REPO / name, to / name, ignore=shutil.ignore_patterns("__pycache__"))
    edits = {
        "pyproject.toml": ('version = "0.1.0"', f'version = "{version}"'),
        "firmware/__init__.py": ('__version__ = "0.1.0"', f'__version__ = "{version}"'),
    }
    for name, (old, new) in [*edits.items(), *(changes or {}).items()]:
        text = (to / name).read_text()
        assert text.count(old) == 1, f"{name}: {old!r}"
        (to / name).write_text(text.replace(old, new))
    return to


def build(source: Path, output: Path, wheelhouse: Path, *args: str | Path) -> Path:
    result = checked(
        run(
            sys.executable, "-m", "firmware.update.build", "--source", source, "--output", output,
            "--wheelhouse", wheelhouse, *args,
        )
    )  # fmt: skip
    return Path(result.stdout.splitlines()[0])


def minisign_sign(bundle: Path, key: Path) -> None:
    """As a central server signs: the standard tool, its default (prehashed) signature."""
    checked(run(tool("minisign", "minisign"), "-S", "-m", bundle, "-s", key))


@dataclass
class Keys:
    public: Path
    secret: Path
    stranger: Path  # another key's secret: not the box's


def make_keys(work: Path) -> Keys:
    minisign = tool("minisign", "minisign")
    checked(run(minisign, "-G", "-W", "-p", work / "update.pub", "-s", work / "update.key"))
    checked(run(minisign, "-G", "-W", "-p", work / "stranger.pub", "-s", work / "stranger.key"))
    return Keys(work / "update.pub", work / "update.key", work / "stranger.key")


def make_wheelhouse(source: Path, to: Path) -> Path:
    """The wheel of ``source`` and every dependency (setuptools too: install.sh --from-source offline)."""
    checked(run(sys.executable, "-m", "pip", "wheel", "-q", "-w", to, source, "setuptools"))
    return to


def install_box(root: Path, wheelhouse: Path, key: Path) -> None:
    """0.1.0 (the wheelhouse's own wheel) installed into the empty root ``root``, offline."""
    assert PYTHON.exists(), f"{PYTHON} missing: install the Debian packages python3 and python3-venv"
    (wheel,) = wheelhouse.glob("edge_recorder-*.whl")
    checked(
        run(
            INSTALL, "--root", root, "--python", PYTHON, "--wheel", wheel,
            "--wheelhouse", wheelhouse, "--no-index", "--update-key", key,
        )
    )  # fmt: skip


def make_state(folder: Path, uid: int, gid: int) -> None:
    """A catalog with a recording and its audio in the spool, owned by the daemon's user (0750/0640)."""
    catalog = Catalog(folder / "catalog.sqlite3")
    catalog.insert(
        {"id": "RE1", "name": "RE1", "call_id": "CA1", "source": "cli", "status": "completed", "state": "done",
         "format": "wav", "sample_rate": 8000, "channels": 1, "track": "both", "options": {},
         "start_time": "2026-01-01T00:00:00Z", "path": "/var/lib/edge-recorder/spool/RE1.wav"}
    )  # fmt: skip
    catalog.close()
    (folder / "spool").mkdir()
    (folder / "spool/RE1.wav").write_bytes(os.urandom(8000))
    own(folder, uid, gid)


def own(folder: Path, uid: int, gid: int) -> None:
    """``folder`` and what it holds made the daemon's: 0750 folders, 0640 files, as its unit's UMask= gives."""
    for path in (folder, *folder.rglob("*")):
        os.chmod(path, 0o750 if path.is_dir() else 0o640)
        if AS_ROOT:
            os.chown(path, uid, gid)


def state(root: Path) -> dict[str, bytes]:
    """The box's own files: config, catalog, spool (the catalog's kept copies aside)."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for folder in ("etc/edge-recorder", STATE)
        for path in sorted((root / folder).rglob("*"))
        if path.is_file() and ".before-" not in path.name
    }


def layout(root: Path) -> dict[str, object]:
    top = root / TOP
    return {
        "links": {p.name: os.readlink(p) for p in top.iterdir() if p.is_symlink()},
        "others": sorted(p.name for p in top.iterdir() if not p.is_symlink()),
        "slots": sorted(p.name for p in (top / "slots").iterdir()),
    }


def update(root: Path, bundle: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The box's own program runs the update (its interpreter is this machine's /usr/bin/python3;
    -I: the box's firmware, not this checkout's in the working directory)."""
    return run(root / TOP / "bin/python", "-I", "-m", "firmware.cli.main", "update", "--root", root, bundle, *args)


def confirm(root: Path, uid: int, gid: int) -> None:
    """The pending switch confirmed as the new version's daemon does it (its note, with the switch's id), and
    recorded by the update guard at the next start (which removes the note)."""
    box = Layout(root)
    pending = read_state(box)
    assert pending is not None and pending.confirmation, pending
    note = box.on_box(pending.confirmation)
    note.write_text(Confirmed(pending.id, pending.slot, pending.version, "2026-01-01T00:05:00Z", 300).to_text())
    if AS_ROOT:
        os.chown(note, uid, gid)
    checked(run("sh", root / GUARD, "--root", root, "start"))
    assert not note.exists()
