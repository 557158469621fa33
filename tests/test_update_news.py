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
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import given

from firmware.update import history
from firmware.update.history import Step
from firmware.update.inbox import Request
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
