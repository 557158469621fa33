"""What the daemon says about updates (``firmware.update.news``), and the files it reads it from.

The box here is a folder laid out as images/install.sh lays out /opt/edge-recorder: two slots, each
with the package metadata pip writes (what ``slots.version_in`` reads), ``current`` and ``previous``
links, the history ``apply.update`` appends to (``firmware.update.history``) and the state file the
update guard writes, in the guard's own format. Each test plays what an update leaves there and
checks the ``device.update`` steps announced, and that none is announced twice, also across a
restart of the daemon (a new ``UpdateNews`` on the same files).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import given

from firmware.update import history
from firmware.update.history import Step
from firmware.update.inbox import Request, put
from firmware.update.news import UpdateNews
from firmware.update.slots import Layout
from firmware.update.state import Confirmed

A, B, C = "a" * 32, "b" * 32, "c" * 32
SWITCH = "5" * 32


def make_box(root: Path) -> Layout:
    box = Layout(root)
    for version in ("0.1.0", "0.2.0"):
        info = box.slots / version / "lib/python3.11/site-packages" / f"edge_recorder-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: edge-recorder\nVersion: {version}\n")
    link(box, "current", "0.1.0")
    (root / "var/lib/edge-recorder").mkdir(parents=True)
    return box


def link(box: Layout, name: str, slot: str) -> None:
    (box.top / f"{name}.new").symlink_to(f"slots/{slot}")
    os.replace(box.top / f"{name}.new", box.top / name)


def write_state(box: Layout, phase: str, switch: str = SWITCH, **extra: str) -> None:
    """The state file as systemd/update-guard writes it."""
    values = {
        "STATE": phase,
        "ID": switch,
        "SLOT": "0.2.0",
        "VERSION": "0.2.0",
        "PREVIOUS_SLOT": "0.1.0",
        "SWITCHED_AT": "2026-12-06T10:00:00Z",
        "BOOT_ID": "x",
        "STARTS": "1",
        "CONFIRMATION": "/var/lib/edge-recorder/update-confirmed",
        "CHANGED_AT": "2026-12-06T10:00:05Z",
        **extra,
    }
    (box.top / "update.state").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def switched(box: Layout, update_id: str = A, via: str = "mqtt") -> None:
    """What apply.update leaves for an update that reached its switch."""
    for stage in ("verified", "installed", "switched"):
        extra = {"switch_id": SWITCH} if stage == "switched" else {}
        history.record(box, Step(update_id, stage, "0.2.0", "0.1.0", via, f"{stage}.", request_id="r-7", **extra))
    link(box, "previous", "0.1.0")
    link(box, "current", "0.2.0")
    write_state(box, "pending")


class Daemon:
    """The daemon's side: an UpdateNews on the box, its announcements collected."""

    def __init__(self, box: Layout) -> None:
        self.box = box
        self.said: list[dict] = []
        self.news = UpdateNews(box, box.on_box("/var/lib/edge-recorder/update-announced"), self.said.append)
        self.clock = 0.0

    def look(self) -> list[tuple[str, str]]:
        """Announce what is new; the (id, stage) pairs said this time."""
        before = len(self.said)
        self.clock += 10
        self.news.poll(now=self.clock)
        return [(s["id"], s["stage"]) for s in self.said[before:]]


def test_each_step_of_an_update_is_announced_once_in_order(tmp_path):
    box = make_box(tmp_path)
    daemon = Daemon(box)
    assert daemon.look() == []
    switched(box)
    assert daemon.look() == [(A, "verified"), (A, "installed"), (A, "switched")]
    assert daemon.look() == []
    step = daemon.said[-1]
    assert step["version"] == "0.2.0" and step["from_version"] == "0.1.0" and step["via"] == "mqtt"
    assert step["request_id"] == "r-7" and step["reason"] is None
    assert daemon.news.snapshot()["switch"] == "pending"


def test_a_restarted_daemon_repeats_nothing_and_says_what_happened_while_it_was_down(tmp_path):
    box = make_box(tmp_path)
    first = Daemon(box)
    switched(box)
    first.look()
    # the switch restarts the daemon; the new version confirms the update (its note), the guard records it
    second = Daemon(box)
    assert second.look() == []
    note = box.on_box("/var/lib/edge-recorder/update-confirmed")
    note.write_text(Confirmed(SWITCH, "0.2.0", "0.2.0", "2026-12-06T10:05:00Z", 300).to_text())
    second.clock += 10
    assert second.look() == [(A, "confirmed")]
    said = second.said[-1]
    assert said["at"] == "2026-12-06T10:05:00Z" and said["via"] == "mqtt" and said["request_id"] == "r-7"
    write_state(box, "confirmed")  # the guard's next run records it and removes the note
    note.unlink()
    assert second.look() == []
    assert Daemon(box).look() == []
    assert second.news.snapshot() | {"last": None} == {
        "running": "0.2.0",
        "previous": "0.1.0",
        "switch": "confirmed",
        "reason": None,
        "last": None,
    }


def test_a_rollback_is_announced_with_its_reason_when_the_previous_version_is_back(tmp_path):
    box = make_box(tmp_path)
    switched(box)
    Daemon(box).look()
    # the new version crash-looped; the guard switched back while no daemon ran
    link(box, "current", "0.1.0")
    link(box, "previous", "0.2.0")
    detail = "edge-recorder 0.2.0 did not stay up: 3 starts without being confirmed"
    write_state(box, "rolled-back", REASON="crash-loop", DETAIL=detail)
    back = Daemon(box)
    assert back.look() == [(A, "rolled_back")]
    said = back.said[-1]
    assert said["reason"] == "crash-loop" and detail in said["message"] and said["version"] == "0.2.0"
    assert back.news.snapshot()["running"] == "0.1.0"
    assert back.news.snapshot()["switch"] == "rolled_back"


def test_a_refusal_is_announced_with_its_reason(tmp_path):
    box = make_box(tmp_path)
    daemon = Daemon(box)
    daemon.look()
    history.record(box, Step(B, "refused", "0.3.0", "0.1.0", "boot", "not signed by the box's key", "signature"))
    assert daemon.look() == [(B, "refused")]
    assert daemon.said[-1]["reason"] == "signature"
    assert daemon.news.snapshot()["last"]["stage"] == "refused"


def test_a_switch_made_by_hand_is_announced_from_the_state_file(tmp_path):
    box = make_box(tmp_path)
    daemon = Daemon(box)
    daemon.look()
    link(box, "previous", "0.1.0")
    link(box, "current", "0.2.0")
    write_state(box, "pending")
    assert daemon.look() == [(SWITCH, "switched")]
    assert daemon.said[-1]["via"] == "install.sh"


def test_a_box_that_never_kept_what_it_announced_says_only_its_latest_update(tmp_path):
    box = make_box(tmp_path)
    history.record(box, Step(C, "refused", "0.0.9", "0.1.0", "command", "old news", "not-newer"))
    switched(box, A)
    assert Daemon(box).look() == [(A, "verified"), (A, "installed"), (A, "switched")]


def test_lines_that_are_not_steps_are_skipped(tmp_path):
    box = make_box(tmp_path)
    daemon = Daemon(box)
    daemon.look()
    with history.history_path(box).open("a") as f:
        f.write('not json\n{"id": "zz", "stage": "verified"}\n[1]\n')
        f.write(json.dumps({"id": B, "stage": "eaten"}) + "\n")
        f.write(json.dumps({"id": B, "stage": "verified", "version": 3}) + "\n")
    history.record(box, Step(B, "verified", "0.3.0"))
    assert daemon.look() == [(B, "verified")]


def test_the_history_keeps_its_last_lines(tmp_path):
    box = make_box(tmp_path)
    for i in range(history.KEEP * 3):
        history.record(box, Step(f"{i:032x}", "refused", message="x" * 300))
    steps = history.read(box)
    assert history.KEEP <= len(steps) <= history.KEEP * 2
    assert steps[-1].id == f"{history.KEEP * 3 - 1:032x}"


@given(st.text(max_size=300))
def test_any_history_line_is_a_step_or_skipped(line):
    step = Step.from_json(line)
    assert step is None or (step.stage in history.STAGES and history.ID.match(step.id))


@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["id", "name", "force", "wait_for_idle", "request_id", "other"]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40), st.just("ab" * 16)),
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_any_request_in_the_inbox_is_read_or_refused_with_a_reason(data):
    try:
        request = Request.parse(data)
    except ValueError as exc:
        assert str(exc)
    else:
        assert history.ID.match(request.id) and request.bundle == f"{request.id}.tar"
        assert "/" not in request.name and request.name.endswith(".tar")


def test_every_reason_an_update_is_refused_for_has_an_exit_status():
    from firmware.cli.update import EXIT
    from firmware.update import Reason

    assert set(EXIT) == set(Reason)


# -- the MQTT update command's checks, before anything is downloaded ------------------------------------


def remote_on(box: Layout, daemon: Daemon, active: bool = False):
    from firmware.update.remote import RemoteUpdates

    return RemoteUpdates(
        box.on_box("/var/lib/edge-recorder/updates"), daemon.news, active=lambda: active, keep_free=0, running="0.1.0"
    )


COMMAND = {"url": "https://127.0.0.1:9/edge-recorder-0.2.0-x86_64.tar", "sha256": "ab" * 32}


def refusal(remote, **fields) -> tuple[str, str]:
    from firmware.control import UpdateError

    try:
        remote.start({**COMMAND, **fields}, "r-1")
    except UpdateError as exc:
        return exc.code, str(exc)
    finally:
        remote.stop()
    raise AssertionError("the update was accepted")


def test_an_update_is_refused_while_recordings_are_active_unless_it_may_wait(tmp_path):
    box = make_box(tmp_path)
    daemon = Daemon(box)
    code, message = refusal(remote_on(box, daemon, active=True))
    assert code == "recording_active" and '"wait_for_idle": true' in message
    remote = remote_on(box, daemon, active=True)
    answer = remote.start({**COMMAND, "wait_for_idle": True}, "r-2")
    remote.stop()
    assert answer["wait_for_idle"] is True and answer["name"] == "edge-recorder-0.2.0-x86_64.tar"


def test_an_update_is_refused_while_root_installs_one_or_the_last_is_not_confirmed(tmp_path):
    box = make_box(tmp_path)
    daemon = Daemon(box)
    with box.locked():  # root installs one (edge-recorder update holds the lock on /opt/edge-recorder)
        assert refusal(remote_on(box, daemon))[0] == "update_busy"
    switched(box)
    assert refusal(remote_on(box, daemon))[0] == "update_unconfirmed"


def test_a_request_root_never_took_is_forgotten_and_said_so(tmp_path):
    """Without edge-recorder-update.path a request would wait forever and refuse every later update."""
    box = make_box(tmp_path)
    daemon = Daemon(box)
    inbox = box.on_box("/var/lib/edge-recorder/updates")
    inbox.mkdir()
    fresh = put(inbox, Request(B, "edge-recorder-0.2.0-x86_64.tar"))
    assert refusal(remote_on(box, daemon))[0] == "update_busy"
    stale = time.time() - 16 * 60
    os.utime(fresh, (stale, stale))
    remote = remote_on(box, daemon)
    remote.start(COMMAND, "r-3")
    remote.stop()
    assert not fresh.exists()
    daemon.look()
    said = [s for s in daemon.said if s["id"] == B]
    assert [s["stage"] for s in said] == ["refused"]
    assert "edge-recorder-update.path is not running" in said[0]["message"]


def test_fields_the_update_command_does_not_take_are_refused_by_name(tmp_path):
    box = make_box(tmp_path)
    remote = remote_on(box, Daemon(box))
    for fields, words in (
        ({"url": "http://example.com/b.tar"}, "https://"),
        ({"sha256": "xyz"}, "sha256"),
        ({"wait_for_idle": "yes"}, "wait_for_idle must be true or false"),
    ):
        try:
            remote.start({**COMMAND, **fields}, "r")
        except ValueError as exc:
            assert words in str(exc), (fields, exc)
        else:
            raise AssertionError(f"{fields} accepted")


def test_a_long_history_is_never_announced_twice(tmp_path):
    box = make_box(tmp_path)
    for i in range(250):
        history.record(box, Step(f"{i:032x}", "refused", message="x" * 280, reason="signature"))
    daemon = Daemon(box)
    daemon.look()
    history.record(box, Step(C, "refused", message="one more", reason="signature"))
    assert daemon.look() == [(C, "refused")]
    assert Daemon(box).look() == []  # a restart
    announced = box.on_box("/var/lib/edge-recorder/update-announced").read_text().splitlines()
    assert len(announced) <= len(history.read(box))


def test_a_separator_in_a_message_does_not_split_its_line():
    step = Step(A, "refused", message="one\u2028two\u2029three\x85four", request_id="r\u2028")
    assert Step.from_json(step.to_json()) == step
    assert len(step.to_json().encode().split(b"\n")) == 1 and step.to_json().isascii()


def test_an_id_with_a_newline_is_not_an_id():
    assert Step.from_json(json.dumps({"id": A + "\n", "stage": "verified"})) is None
    for bad in (A + "\n", A.upper()):
        try:
            Request.parse(json.dumps({"id": bad, "name": "b.tar"}).encode())
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} taken as an id")
    for bad in ("b.tar\n", "\u2028.tar"):
        try:
            Request.parse(json.dumps({"id": A, "name": bad}).encode())
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} taken as a name")
    try:
        Request.parse(json.dumps({"id": A, "name": "b.tar", "request_id": "\ud800"}).encode())
    except ValueError as exc:
        assert "request_id" in str(exc)
    else:
        raise AssertionError("a lone surrogate taken as a request id")


def test_a_download_root_took_further_is_no_longer_the_last_step(tmp_path):
    box = make_box(tmp_path)
    daemon = Daemon(box)
    daemon.look()
    daemon.news.say(Step(A, "downloading", from_version="0.1.0", via="mqtt", message="3.0 of 9.0 MB"))
    daemon.look()
    assert daemon.news.snapshot()["last"]["stage"] == "downloading"
    history.record(box, Step(A, "refused", "0.2.0", "0.1.0", "mqtt", "not signed by the box's key", "signature"))
    daemon.look()
    assert daemon.news.snapshot()["last"]["stage"] == "refused"


def test_the_daemon_knows_when_another_slot_is_current(tmp_path):
    box = make_box(tmp_path)
    said: list = []
    news = UpdateNews(box, box.on_box("/var/lib/edge-recorder/update-announced"), said.append, running_slot="0.1.0")
    news.poll(now=10)
    assert not news.outdated
    switched(box)
    news.poll(now=20)
    assert news.outdated


def test_nothing_is_said_while_an_update_is_switching_and_then_only_what_it_did(tmp_path):
    """install.sh records the switch before it renames current, and the history says it after: read in between,
    the state file alone would tell of a switch by hand and a rollback that never happened."""
    box = make_box(tmp_path)
    daemon = Daemon(box)
    daemon.look()
    with box.locked():  # the update runs
        write_state(box, "pending")  # the guard has recorded the switch; current still names 0.1.0
        assert daemon.look() == []
        link(box, "previous", "0.1.0")
        link(box, "current", "0.2.0")
        assert daemon.look() == [] and not daemon.news.outdated
        for stage in ("verified", "installed", "switched"):
            extra = {"switch_id": SWITCH} if stage == "switched" else {}
            history.record(box, Step(A, stage, "0.2.0", "0.1.0", "mqtt", f"{stage}.", **extra))
    assert daemon.look() == [(A, "verified"), (A, "installed"), (A, "switched")]


def test_a_slot_without_edge_recorder_in_it_is_not_restarted_into(tmp_path):
    box = make_box(tmp_path)
    (box.slots / "empty").mkdir()
    said: list = []
    news = UpdateNews(box, box.on_box("/var/lib/edge-recorder/update-announced"), said.append, running_slot="0.1.0")
    link(box, "current", "empty")
    news.poll(now=10)
    assert not news.outdated
    link(box, "current", "0.2.0")
    news.poll(now=20)
    assert news.outdated
