"""``edge-recorder status`` against the real daemon: its status file, the catalog, a real broker."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from .broker import free_port
from .daemon_run import ROOT, Box

RATE = 8000
UNAVAILABLE = 69
NOPERM = 77
TOKEN = "s3cr3t-upload-t0ken"


def _line(seconds: float) -> np.ndarray:
    """A quiet line (low noise), long enough that the simulated box keeps running through a test."""
    return np.random.default_rng(7).normal(0, 40, int(seconds * RATE)).astype(np.int16)


def _running_box(tmp_path: Path, scenario: str = "", **sections) -> Box:
    return Box.make(tmp_path, _line(60.0), RATE, sim={"pace": "realtime", "scenario": scenario}, **sections)


def _status(config: Path, *extra: str, user: int | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "firmware.cli.main", "status", "--config", str(config), *extra]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)


def _report(config: Path) -> dict:
    done = _status(config, "--json")
    assert done.returncode in (0, UNAVAILABLE), done.stderr
    return json.loads(done.stdout)


def _wait_file(box: Box, predicate, timeout: float = 20.0) -> dict:
    """The daemon's status file once ``predicate`` holds for it."""
    path, document = box.root / "status.json", None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            document = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            document = None
        if document is not None and predicate(document):
            return document
        time.sleep(0.1)
    raise AssertionError(f"the status file never matched; last: {document}")


def _wait_catalog(box: Box, sql: str, timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = sqlite3.connect(box.root / "catalog.sqlite3", timeout=5)
        try:
            rows = db.execute(sql).fetchall()
        except sqlite3.OperationalError:  # not created yet
            rows = []
        finally:
            db.close()
        if rows:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"nothing in the catalog for {sql}")


def _wait_failed_upload(box: Box, also: str = "SELECT 1", quiet: float = 2.0) -> None:
    """Until an upload has failed and waits at least ``quiet`` seconds for its next try (so what status
    reads is not an attempt under way), and ``also`` finds a row."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        waiting = _wait_catalog(
            box,
            "SELECT o.next_attempt FROM outbox o JOIN uploads u ON u.recording_id = o.recording_id "
            "WHERE o.kind = 'upload' AND u.state = 'pending' AND u.last_error IS NOT NULL",
        )
        if waiting[0][0] - time.time() >= quiet and _wait_catalog(box, also):
            return
        time.sleep(0.05)
    raise AssertionError("no upload failed and waited")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.communicate(timeout=30)


def test_a_running_box_shows_its_recording_and_the_broker_connected(tmp_path, broker):
    box = _running_box(tmp_path, "0.3=button", mqtt={"url": broker.url, "command_auth": "broker"})
    proc = box.start()
    try:
        document = _wait_file(box, lambda d: d["recordings"] and d["broker"]["state"] == "connected")
        [active] = document["recordings"]
        assert document["pid"] == proc.pid and document["phase"] == "ready"
        assert stat.S_IMODE((box.root / "status.json").stat().st_mode) == 0o640
        time.sleep(1.0)  # the recording runs on; status says how long so far

        shown = _status(box.config)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout
        assert f"running (ready): pid {proc.pid}" in out
        [row] = [line for line in out.splitlines() if active["id"] in line]
        assert "button" in row and "recording" in row
        seconds = float(row.split("recording")[-1].split()[0])
        assert seconds >= 1.0
        assert f"{broker.url}: connected since" in out
        assert "catalog    1 recording: 1 in-progress" in out

        report = _report(box.config)  # --json: the same facts
        assert report["running"] is True and report["daemon"]["pid"] == proc.pid
        [listed] = report["recordings"]
        assert (listed["id"], listed["source"], listed["state"]) == (active["id"], "button", "recording")
        assert listed["duration"] >= seconds - 0.5
        assert report["broker"]["state"] == "connected" and report["broker"]["url"] == broker.url
        assert report["catalog"]["by_status"] == {"in-progress": 1}
        assert report["storage"]["free_bytes"] > 0 and report["storage"]["reserve_held"] is True
    finally:
        _stop(proc)


def test_a_stopped_broker_shows_disconnected_with_its_error(tmp_path, broker):
    box = _running_box(tmp_path, mqtt={"url": broker.url, "command_auth": "broker"})
    proc = box.start()
    try:
        connected = _wait_file(box, lambda d: d["broker"]["state"] == "connected")
        broker.stop()
        _wait_file(box, lambda d: d["broker"]["state"] == "disconnected")

        shown = _status(box.config)
        assert shown.returncode == 0, shown.stderr  # the box runs on without its broker
        [line] = [line for line in shown.stdout.splitlines() if line.startswith("broker")]
        assert f"{broker.url}: disconnected since" in line and "last error" in line
        assert "from the broker" in line or "cannot connect" in line

        b = _report(box.config)["broker"]
        assert b["state"] == "disconnected" and b["last_error"] and b["last_error"] in line
        assert b["since"] > connected["broker"]["since"] and b["last_error_at"]
    finally:
        _stop(proc)


def test_an_unreachable_upload_destination_shows_the_backlog_and_the_last_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/calls/"  # nothing listens there
    box = _running_box(tmp_path, "0.3=button, 0.8=button", upload={"destination": url, "token": TOKEN})
    proc = box.start()
    try:
        _wait_failed_upload(box)

        shown = _status(box.config)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        [where] = [i for i, line in enumerate(lines) if line.startswith(f"  {url} (default)")]
        assert "failing; 1 upload waiting" in lines[where]
        assert lines[where + 1].startswith("    last error") and "refused" in lines[where + 1]

        report = _report(box.config)
        [dest] = [d for d in report["delivery"]["destinations"] if d["target"] == url]
        assert (dest["name"], dest["uploads"], dest["health"]) == ("default", 1, "failing")
        assert "refused" in dest["last_error"] and dest["last_error_at"] and dest["attempts"] >= 1
        assert report["delivery"]["outbox"] == 1
        for secret_free in (shown.stdout, json.dumps(report), (box.root / "status.json").read_text()):
            assert TOKEN not in secret_free
    finally:
        _stop(proc)


def test_a_box_killed_mid_recording_exits_69_and_shows_what_the_catalog_knows(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/calls/"
    box = _running_box(tmp_path, "0.3=button, 0.8=button, 1.2=button", upload={"destination": url})
    proc = box.start()
    try:
        in_progress = "SELECT id FROM recordings WHERE status = 'in-progress'"
        _wait_failed_upload(box, also=in_progress)  # the first recording's upload; the second one records
        [(left,)] = _wait_catalog(box, in_progress)
    finally:
        proc.kill()  # a crash: nobody says "stopped"
        proc.communicate(timeout=10)

    shown = _status(box.config)
    assert shown.returncode == UNAVAILABLE, shown.stderr
    out = shown.stdout
    assert out.startswith(f"the box is not running: pid {proc.pid} is gone")
    assert "recordings 1 left in progress" in out
    [row] = [line for line in out.splitlines() if left in line]
    assert "in-progress" in row and "button" in row
    assert f"  {url} (default): failing; 1 upload waiting" in out

    report = _report(box.config)
    assert report["running"] is False and f"pid {proc.pid}" in report["not_running_because"]
    assert [(r["id"], r["status"]) for r in report["recordings"]] == [(left, "in-progress")]
    assert report["broker"]["state"] == "off" and report["delivery"]["outbox"] == 1
    assert report["catalog"]["by_status"] == {"completed": 1, "in-progress": 1}
    assert report["storage"]["free_bytes"] > 0


def test_a_box_that_stopped_says_when(tmp_path):
    box = Box.make(tmp_path, _line(1.0), RATE, sim={"scenario": "0.2=button, 0.6=button"})
    assert box.run().code == 0
    shown = _status(box.config)
    assert shown.returncode == UNAVAILABLE, shown.stderr
    assert shown.stdout.startswith("the box is not running: it stopped at ")
    assert "recordings none left in progress" in shown.stdout
    assert "catalog    1 recording: 1 completed" in shown.stdout


def test_a_box_that_never_ran_exits_69(tmp_path):
    box = Box.make(tmp_path, _line(0.1), RATE)
    shown = _status(box.config)
    assert shown.returncode == UNAVAILABLE, shown.stderr
    assert shown.stdout.startswith("the box is not running: it has written no status file")
    assert "no catalog there yet" in shown.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as two users needs root")
def test_a_user_who_may_not_read_the_status_is_told_whom_to_run_as():
    # outside pytest's folders, which are root's only: the other user must reach the config and the state's folder
    state = Path(tempfile.mkdtemp(prefix="edge-recorder-state-", dir="/tmp"))
    elsewhere = Path(tempfile.mkdtemp(prefix="edge-recorder-config-", dir="/tmp"))
    try:
        box = Box.make(state, _line(0.5), RATE)
        assert box.run().code == 0
        elsewhere.chmod(0o755)
        config = Path(shutil.copy(box.config, elsewhere / "config.toml"))
        config.chmod(0o644)
        box_user, other_user = 65534, 1  # nobody owns the box's files (0750), daemon asks
        for path in (state, *state.rglob("*")):
            os.chown(path, box_user, box_user)
        state.chmod(0o750)
        shown = _status(config, user=other_user)
        assert shown.returncode == NOPERM, shown.stderr
        assert "Traceback" not in shown.stderr and len(shown.stderr.strip().splitlines()) == 1
        assert f"{state / 'status.json'}: permission denied for daemon; run it as nobody (sudo -u nobody " in (
            shown.stderr
        )
    finally:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(elsewhere, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as two users needs root")
def test_a_member_of_the_box_group_reads_the_status_without_writing_a_byte():
    state = Path(tempfile.mkdtemp(prefix="edge-recorder-state-", dir="/tmp"))
    box_user, member = 65534, 1  # the box runs as nobody; daemon is in nobody's group
    try:
        box = Box.make(state, _line(60.0), RATE, sim={"pace": "realtime", "scenario": "0.3=button"})
        config = box.config
        config.chmod(0o644)
        os.chown(state, box_user, box_user)
        state.chmod(0o750)
        as_box = ["setpriv", f"--reuid={box_user}", f"--regid={box_user}", "--clear-groups"]
        proc = subprocess.Popen([*as_box, *box.argv()], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            [active] = _wait_file(box, lambda d: d["recordings"])["recordings"]
            group = ["setpriv", f"--reuid={member}", f"--regid={member}", f"--groups={box_user}"]
            argv = [sys.executable, "-m", "firmware.cli.main", "status", "--config", str(config), "--json"]
            shown = subprocess.run([*group, *argv], cwd=ROOT, capture_output=True, text=True, timeout=30)
            assert shown.returncode == 0, shown.stderr
            report = json.loads(shown.stdout)
            assert [r["id"] for r in report["recordings"]] == [active["id"]]
            assert report["catalog"]["by_status"] == {"in-progress": 1}
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        before = sorted((p.name, p.stat().st_mtime_ns) for p in state.iterdir())
        shown = subprocess.run([*group, *argv], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert shown.returncode == UNAVAILABLE, shown.stderr
        assert json.loads(shown.stdout)["catalog"]["by_status"] == {"completed": 1}
        assert sorted((p.name, p.stat().st_mtime_ns) for p in state.iterdir()) == before  # nothing made or changed
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize(
    "forged",
    [
        {"pid": 2**70},
        {"pid": True},
        {"pid": None},
        {"uptime": "long"},
        {"input_level": "-20"},
        {"broker": "connected"},
        {"spool": 5},
        {"recordings": {"a": 1}},
    ],
)
def test_a_status_file_the_daemon_did_not_write_reads_as_not_running(tmp_path, forged):
    """Only the daemon's user may write it; still, a file with the wrong types is no proof of a running box."""
    from firmware.daemon import status_file

    path = tmp_path / "status.json"
    document = {"format": 1, "pid": os.getpid(), "phase": "ready"} | forged
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="not a status file"):
        status_file.read(path)


def test_control_characters_from_the_outside_reach_the_terminal_as_escapes(tmp_path, capsys):
    """An upload server's error body (or a forged file) may hold escape sequences: shown, never obeyed."""
    from firmware.cli.main import main
    from firmware.daemon import status_file
    from firmware.daemon.system import boot_id

    evil = "\x1b]0;owned\x07\x1b[2K\x1b[1A\x1b[32mok: all uploads delivered"
    (tmp_path / "status.json").write_text(
        json.dumps(
            {
                "format": status_file.FORMAT,
                "pid": os.getpid(),
                "phase": "ready",
                "boot_id": boot_id(),
                "monotonic": time.monotonic(),
                "state": "idle",
                "last_error": evil,
                "problems": {"upload_failed": evil},
            }
        )
    )
    main(["status", "--state-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "owned" in out and "\x1b" not in out and "\x07" not in out
