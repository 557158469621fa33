"""Shared fixtures: a real Mosquitto broker per test, a running box with its HTTP API, a boot partition."""

from __future__ import annotations

import os

import pytest

from .broker import Broker


@pytest.fixture
def broker(tmp_path):
    """A running Mosquitto on a free loopback port, anonymous access, no persistence."""
    running = Broker(tmp_path / "broker").start()
    yield running
    running.stop()


@pytest.fixture
def api(tmp_path):
    """A box running in this process with its API on a free loopback port (``test_api.Running``)."""
    from .test_api import Running

    running = Running(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def boot(tmp_path):
    """The card's FAT boot partition as Raspberry Pi OS Bookworm mounts it (``/boot/firmware``)."""
    boot = tmp_path / "boot/firmware"
    boot.mkdir(parents=True)
    return boot


@pytest.fixture(autouse=True)
def _umask_kept():
    """Every test ends with this process's umask as it found it: ``run`` sets the daemon's own (027), and
    the install and update tests that follow make folders another user must reach."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)
