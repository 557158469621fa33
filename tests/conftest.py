"""Shared fixtures: a real Mosquitto broker per test."""

from __future__ import annotations

import pytest

from .broker import Broker


@pytest.fixture
def broker(tmp_path):
    """A running Mosquitto on a free loopback port, anonymous access, no persistence."""
    running = Broker(tmp_path / "broker").start()
    yield running
    running.stop()
