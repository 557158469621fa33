"""Running the system's programs from the tests: the install, update and image tests share these."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def run(*args: str | Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess[str]:
    """``args`` run with their output captured as text (not checked: the caller asserts on it)."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)


def tool(name: str, package: str) -> str:
    """The path of a program the test needs, or a failure naming the Debian package that has it."""
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: install the Debian package '{package}' (CI and run.sh install it)")
    return path
