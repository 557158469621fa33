"""The control API that every front end uses, called from another thread while the box runs."""

from __future__ import annotations

import re
import threading
import time

import pytest

from firmware import config as cfg
from firmware.catalog import Catalog
from firmware.control import Control, ControlError, OptionError
from firmware.daemon.box import Box

from .daemon_run import Box as BoxFiles
from .daemon_run import counter_signal

RATE = 8000


@pytest.fixture
def running(tmp_path):
    files = BoxFiles.make(tmp_path, counter_signal(6.0), RATE, sim={"pace": "realtime"})
    box = Box(cfg.load(files.config))
    thread = threading.Thread(target=box.run)
    thread.start()
    deadline = time.monotonic() + 10
    while box.position == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    yield box, Control(box), thread
    box.stop()
    thread.join(timeout=20)
    assert not thread.is_alive()


def test_named_recordings_start_pause_resume_and_stop(running):
    _, control, _ = running
    monitor = control.start({"name": "monitor"}, source="mqtt")
    voicemail = control.start({"name": "voicemail", "format": "mp3"}, source="api")
    assert (monitor["source"], monitor["status"]) == ("mqtt", "in-progress")
    assert monitor["id"].startswith("RE") and monitor["call_id"] == voicemail["call_id"]
    with pytest.raises(ControlError, match="'current' needs exactly one active recording; 2 are active"):
        control.stop()
    paused = control.pause("voicemail", pause_behavior="skip")
    assert paused["status"] == "paused"
    time.sleep(0.3)
    assert control.resume("voicemail")["status"] == "in-progress"
    assert {r["name"]: r["state"] for r in control.active()} == {"monitor": "recording", "voicemail": "recording"}
    done = control.stop("monitor")
    assert (done["status"], done["end_reason"]) == ("completed", "stop")
    assert control.stop()["name"] == "voicemail"  # now 'current' is the only one left
    assert control.get(monitor["id"])["path"].endswith(".wav")
    assert control.get(voicemail["id"])["path"].endswith(".mp3")


def test_bad_requests_get_errors_that_name_the_problem(running):
    _, control, _ = running
    with pytest.raises(OptionError, match="end_on_silence: 'soon' is not valid"):
        control.start({"end_on_silence": "soon"})
    with pytest.raises(OptionError, match="colour"):
        control.start({"colour": "blue"})
    with pytest.raises(ControlError, match="no active recording has the name or id 'nobody'"):
        control.pause("nobody")
    with pytest.raises(OptionError, match="pause_behavior"):
        control.pause("current", pause_behavior="later")
    with pytest.raises(ControlError, match=r"nothing to pause|exactly one"):
        control.pause()
    with pytest.raises(LookupError, match=r"no recording 'RE00'"):
        control.get("RE00")
    control.start({"name": "dup"})
    with pytest.raises(ControlError, match="already active"):
        control.start({"name": "dup"})


def test_the_button_through_the_control_api_toggles(running):
    box, control, thread = running
    control.button()
    time.sleep(0.2)
    control.button()
    box.stop()
    thread.join(timeout=20)
    rows = Catalog(box.catalog.path).list()
    assert [(r["source"], r["end_reason"]) for r in rows] == [("button", "button")]


def test_a_bad_status_callback_is_refused_at_start(running):
    _, control, _ = running
    with pytest.raises(OptionError, match=re.escape("status_callback: 'ftp://example.com/x' is not valid")):
        control.start({"status_callback": "ftp://example.com/x"})
    with pytest.raises(OptionError, match="status_callback_method"):
        control.start({"status_callback": "https://example.com/cb", "status_callback_method": "PATCH"})
