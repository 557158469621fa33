"""The control API that every front end uses.

Most tests drive it through the real audio loop, session and journal run inline: no thread, no
sleeping, the audio fed by the test between two calls, so every position is exact. One test calls it
from another thread while the whole box runs, as the front ends do.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import soundfile as sf

from firmware import config as cfg
from firmware.catalog import Catalog, OutboxItem
from firmware.cloudevents import CloudEvents, Timebase
from firmware.control import Control, ControlError, OptionError, error_fields
from firmware.core import InputLayout, RecordingOptions, Session, StateError
from firmware.daemon.app import Box
from firmware.daemon.hardware import Hardware
from firmware.daemon.loop import AudioLoop, LoopSettings
from firmware.destinations import Destinations
from firmware.journal import Journal
from firmware.spool import Takes

from .daemon_run import Box as BoxFiles
from .daemon_run import counter_signal, positions

RATE = 8000
DESTINATION = "https://central.example.com/calls/"


class Inline:
    """A box without threads: the real loop, session, journal and catalog; the test feeds the audio."""

    def __init__(self, root, *, upload: bool = False) -> None:
        self.events: list[dict] = []
        self.catalog = Catalog(root / "catalog.sqlite3")
        defaults = RecordingOptions.from_mapping({"format": "wav", "sample_rate": RATE})
        self.session = Session(InputLayout(RATE, 1), options=defaults)
        self.journal = Journal(
            self.catalog,
            Takes(root / "spool", RATE, file_names="id"),
            CloudEvents("inline", Timebase(datetime.now(UTC), RATE)),
            routes=self._routes if upload else lambda event, row: [],
            device_id="inline",
            input_rate=RATE,
            sinks=[self.events.append],
        )
        # No capture: the test feeds the loop itself (a Hardware with nothing to open).
        self.loop = AudioLoop(self.session, self.journal, Hardware(capture=None), LoopSettings(root, 0, 1.0, 1.0))
        self.journal.state = self.loop.state
        self.destinations = Destinations.from_config(
            {"destination": "https://central.example.com/calls/", "token": "t"},
            {"archive": {"url": "s3://archive/box/"}},
        )
        self.control = Control(
            self.loop, self.journal, defaults=lambda: defaults, destinations=lambda: self.destinations
        )
        self.fed = 0

    @staticmethod
    def _routes(event, row):
        if event["type"] == "recording.finished" and row and row.get("path"):
            return [OutboxItem("upload", DESTINATION, {"path": row["path"]}, row["id"])]
        return []

    def feed(self, seconds: float) -> None:
        n = round(seconds * RATE)
        self.loop.feed(counter_signal(8.0)[self.fed : self.fed + n])
        self.fed += n

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


@pytest.fixture
def inline(tmp_path):
    box = Inline(tmp_path)
    yield box
    box.catalog.close()


def test_start_pause_resume_stop_act_on_the_sample_they_are_called_at(inline):
    control = inline.control
    inline.feed(0.5)
    rec = control.start({"name": "desk"}, source="mqtt")
    assert (rec["source"], rec["status"], rec["name"]) == ("mqtt", "in-progress", "desk")
    inline.feed(1.0)
    assert control.pause("desk", pause_behavior="skip")["status"] == "paused"
    assert control.active() == [{"id": rec["id"], "name": "desk", "state": "paused"}]
    inline.feed(0.5)
    assert control.resume("desk")["status"] == "in-progress"
    inline.feed(1.0)
    done = control.stop()
    assert (done["status"], done["end_reason"], done["duration"]) == ("completed", "stop", 2.0)
    kept = positions(sf.read(done["path"], dtype="int16")[0])
    expected = np.r_[np.arange(round(0.5 * RATE), round(1.5 * RATE)), np.arange(round(2.0 * RATE), round(3.0 * RATE))]
    np.testing.assert_array_equal(kept, expected)  # the skipped half second is left out, to the sample
    assert inline.types() == ["recording.started", "recording.paused", "recording.resumed", "recording.finished"]
    assert control.state()["state"] == "idle"


def test_bad_requests_get_errors_that_name_the_problem(inline):
    control = inline.control
    with pytest.raises(OptionError, match="end_on_silence: 'soon' is not valid"):
        control.start({"end_on_silence": "soon"})
    with pytest.raises(OptionError, match="colour"):
        control.start({"colour": "blue"})
    with pytest.raises(OptionError, match=re.escape("status_callback: 'ftp://example.com/x' is not valid")):
        control.start({"status_callback": "ftp://example.com/x"})
    with pytest.raises(ControlError, match="no active recording has the name or id 'nobody'"):
        control.pause("nobody")
    with pytest.raises(OptionError, match="pause_behavior"):
        control.pause("current", pause_behavior="later")
    with pytest.raises(ControlError, match="exactly one"):
        control.pause()
    with pytest.raises(LookupError, match=r"no recording 'RE00'"):
        control.get("RE00")
    control.start({"name": "dup"})
    with pytest.raises(ControlError, match="already active"):
        control.start({"name": "dup"})
    control.pause("dup")
    with pytest.raises(StateError) as clash:
        control.pause("dup")
    assert error_fields(clash.value) == {"state": "paused", "trigger": "pause", "recording": "dup"}


def test_the_buttons_toggle(inline):
    control = inline.control
    control.button()
    inline.feed(0.5)
    control.pause_button()
    assert control.state()["state"] == "paused"
    control.pause_button()
    control.button()
    [row] = inline.catalog.list()
    assert (row["source"], row["end_reason"], row["duration"]) == ("button", "button", 0.5)


def test_a_recording_waiting_for_its_upload_is_deleted_only_when_forced(tmp_path):
    box = Inline(tmp_path, upload=True)
    control = box.control
    rec = control.start({})
    box.feed(0.5)
    control.stop()
    with pytest.raises(ControlError, match="not uploaded yet"):
        control.delete(rec["id"], actor="test")
    with pytest.raises(ControlError, match="only finished recordings"):
        control.delete(control.start({})["id"], force=True)
    control.stop()
    gone = control.delete(rec["id"], force=True, actor="test")
    assert gone["status"] == "deleted" and gone["path"] is None
    [deleted] = [e for e in box.events if e["type"] == "recording.deleted"]
    assert deleted["data"]["cancelled_uploads"] == [{"destination": DESTINATION, "state": "queued"}]
    assert box.catalog.pending_uploads(rec["id"]) == []
    [audit] = box.catalog.query("SELECT actor, detail FROM audit WHERE action = 'delete'")
    assert audit["actor"] == "test" and "cancelled" in audit["detail"]
    with pytest.raises(ControlError, match="deleted already"):
        control.delete(rec["id"], force=True)
    box.catalog.close()


def test_a_finished_recording_is_processing_while_its_file_is_made(inline, monkeypatch):
    seen = []
    real = inline.journal.takes.finish_part

    def finishing(*args, **kw):
        seen.append(inline.catalog.get(rid)["status"])
        return real(*args, **kw)

    monkeypatch.setattr(inline.journal.takes, "finish_part", finishing)
    rid = inline.control.start({})["id"]
    inline.feed(0.2)
    assert inline.control.stop()["status"] == "completed"
    assert seen == ["processing"]


def test_every_report_of_a_change_carries_the_state_after_it(inline):
    # What the journal's reports see (the MQTT link publishes the retained state from here).
    seen = []
    inline.journal.on_change = lambda event: seen.append((event["type"], inline.loop.state()["state"]))
    inline.control.start({})
    inline.feed(0.2)
    inline.control.pause()
    inline.control.stop()
    assert seen == [("recording.started", "recording"), ("recording.paused", "paused"), ("recording.finished", "idle")]


def test_a_claimed_loop_runs_calls_from_other_threads_only_when_it_takes_them(inline):
    inline.loop.claim()  # as the box does first thing in run(): before delivery and the API start
    answers = []
    caller = threading.Thread(target=lambda: answers.append(inline.control.start({})["status"]))
    caller.start()
    caller.join(timeout=0.5)
    assert caller.is_alive() and inline.catalog.list() == []  # queued, not run beside the loop
    while caller.is_alive():
        inline.loop._run_controls()  # the loop takes its queue between two periods
        caller.join(timeout=0.05)
    assert answers == ["in-progress"]


@pytest.fixture
def running(tmp_path):
    files = BoxFiles.make(tmp_path, counter_signal(6.0), RATE, sim={"pace": "realtime"})
    box = Box(cfg.load(files.config))
    thread = threading.Thread(target=box.run)
    thread.start()
    deadline = time.monotonic() + 10
    while box.position == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    yield box, box.control, thread
    box.stop()
    thread.join(timeout=20)
    assert not thread.is_alive()


def test_calls_from_another_thread_run_on_the_loop_of_a_running_box(running):
    _, control, _ = running
    monitor = control.start({"name": "monitor"}, source="mqtt")
    voicemail = control.start({"name": "voicemail", "format": "mp3"}, source="api")
    assert monitor["call_id"] == voicemail["call_id"]
    with pytest.raises(ControlError, match="'current' needs exactly one active recording; 2 are active"):
        control.stop()
    assert control.pause("voicemail", pause_behavior="skip")["status"] == "paused"
    assert {r["name"]: r["state"] for r in control.active()} == {"monitor": "recording", "voicemail": "paused"}
    assert control.stop("monitor")["end_reason"] == "stop"
    assert control.stop()["name"] == "voicemail"  # now 'current' is the only one left
    assert control.get(monitor["id"])["path"].endswith(".wav")
    assert control.get(voicemail["id"])["path"].endswith(".mp3")


def test_a_vendors_default_the_input_cannot_give_falls_back_to_the_boxs_and_says_so(inline):
    """Twilio's TwiML <Recording> reference: a bare ``<Start><Recording>`` is dual. On a mono line the box records mono, as its own default,
    and the answer lists ``channels`` as not honoured; a document that asks for dual itself is refused."""
    control = inline.control
    inline.feed(0.2)
    action, row, unsupported = control.request({"twiml": '<Start><Recording name="bare"/></Start>'}, source="api")
    assert (action, row["channels"], row["status"]) == ("start", 1, "in-progress")
    [note] = [u for u in unsupported if u["field"] == "channels"]
    assert note["value"] == "dual" and "mono" in note["reason"]
    inline.feed(0.2)
    control.stop("bare")
    with pytest.raises(ControlError, match="channels=dual needs the inbound and outbound tracks"):
        control.request({"twiml": '<Start><Recording name="asked" channels="dual"/></Start>'}, source="api")
