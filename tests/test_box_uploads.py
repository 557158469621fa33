"""Uploads from the running box: HTTPS, S3 and MQTT destinations, recording.available, permanent errors, resume."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.catalog import Catalog
from firmware.daemon.system import clock_synchronized

from .daemon_run import ROOT, Box, Result, counter_signal, events
from .http_servers import FlakyHttpServer
from .seaweed import SeaweedS3
from .test_mqtt import Central

RATE = 8000


def _box(tmp_path, upload: dict, **sections) -> Box:
    sim = {"scenario": "0.5=button, 2=button", "pace": "realtime"}
    sim.update(sections.pop("sim", {}))
    return Box.make(tmp_path, counter_signal(3.5), RATE, upload=upload, sim=sim, **sections)


def _uploads(root) -> list[dict]:
    catalog = Catalog(root / "catalog.sqlite3")
    try:
        return [dict(r) for r in catalog.query("SELECT * FROM uploads")]
    finally:
        catalog.close()


def test_https_upload_and_recording_available(tmp_path):
    with FlakyHttpServer(bearer_token="t0ken") as server:
        box = _box(tmp_path, {"destination": server.url + "/calls/", "token": "t0ken"})
        result = box.run()
        assert result.code == 0, result.stderr
        [row] = box.rows()
        [put] = server.received
        media = Path(row["path"]).read_bytes()
        assert put.method == "PUT" and put.body == media and put.sha256 == row["sha256"]
        assert put.path.startswith("/calls/") and put.path.endswith(f"_test-box_{row['call_id']}.wav")
        [available] = result.of("recording.available")
        assert available["data"]["id"] == row["id"] and available["data"]["location"].endswith(put.path)
        [upload] = _uploads(tmp_path)
        assert (upload["state"], upload["location"]) == ("done", available["data"]["location"])
        # stamped with whether the clock was synchronised: retention counts an unsynchronised one from the sync
        assert upload["clock_synced"] == int(clock_synchronized())


def test_a_415_is_not_retried_and_is_reported(tmp_path):
    with FlakyHttpServer(mode=415) as server:
        box = _box(tmp_path, {"destination": server.url + "/calls/"})
        result = box.run()
        assert result.code == 0
        assert len(server.received) == 1  # tried once, never again
        [failed] = [e for e in result.of("device.error") if e["data"]["code"] == "upload_failed"]
        assert "415" in failed["data"]["message"]
        [upload] = _uploads(tmp_path)
        assert upload["state"] == "failed" and "415" in upload["last_error"]
        [row] = box.rows()
        assert row["error_code"] == "upload_failed" and row["status"] == "completed"  # the recording itself is fine


def test_an_upload_killed_mid_way_is_resumed_after_a_restart(tmp_path):
    with FlakyHttpServer(mode="stall") as server:
        box = _box(tmp_path, {"destination": server.url + "/calls/", "timeout": 30})
        proc = box.start()
        deadline = time.monotonic() + 20
        while not server.received and time.monotonic() < deadline:  # the upload has begun, and hangs
            time.sleep(0.05)
        assert server.received, "the upload never started"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        server.mode = "ok"
        silence = tmp_path / "short.wav"
        import numpy as np
        import soundfile as sf

        sf.write(silence, np.zeros(800, np.int16), RATE, subtype="PCM_16")
        box.sections["sim"] = {"enabled": True, "audio": str(silence), "pace": "realtime"}
        result = box.run()
        assert result.code == 0, result.stderr
        [row] = box.rows()
        done = [r for r in server.received if r.status == 201]
        assert done and done[-1].sha256 == row["sha256"]
        assert [u["state"] for u in _uploads(tmp_path)] == ["done"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    server.client().make_bucket("calls")
    yield server
    server.stop()


def test_s3_upload(tmp_path, s3):
    creds = s3.credentials(writer=True)
    box = _box(
        tmp_path,
        {
            "destination": "s3://calls/site-1/",
            "s3_endpoint": creds.s3_endpoint,
            "s3_region": creds.s3_region,
            "s3_access_key": creds.s3_access_key,
            "s3_secret_key": creds.s3_secret_key,
        },
    )
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    [available] = result.of("recording.available")
    location = available["data"]["location"]
    assert location.startswith("s3://calls/site-1/") and location.endswith(".wav")
    key = location.removeprefix("s3://calls/")
    body = s3.client().get_object("calls", key).read()
    assert hashlib.sha256(body).hexdigest() == row["sha256"]
    # the object says whose it is, to any S3 client (here minio's), without the catalog
    metadata = {k.lower(): v for k, v in s3.client().stat_object("calls", key).metadata.items()}
    assert metadata["x-amz-meta-recording-id"] == row["id"]
    assert metadata["x-amz-meta-call-id"] == row["call_id"]
    assert metadata["x-amz-meta-device-id"] == "test-box"
    assert metadata["x-amz-meta-sha256"] == row["sha256"]


@pytest.mark.parametrize("asked_by", ["config", "command"])
def test_mqtt_upload_through_edge_recorder_receive(tmp_path, broker, asked_by):
    """``config``: [upload] destination = "mqtt" and the button. ``command``: nothing in the config; a
    recording started over MQTT asks for destination "mqtt" in its own start options."""
    store = tmp_path / "central"
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware.cli.main",
            "receive",
            "--broker",
            broker.url,
            "--store",
            str(store),
            "--once",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # the receiver joins its group
        if asked_by == "config":
            box = _box(tmp_path / "box", {"destination": "mqtt"}, mqtt={"url": broker.url})
            result = box.run()
        else:
            box = _box(tmp_path / "box", {}, mqtt={"url": broker.url, "command_auth": "broker"}, sim={"scenario": ""})
            central = Central(broker)
            try:
                proc = box.start()
                central.wait_for(lambda topic, payload: topic.endswith("/status") and payload == b"online")
                started = central.command({"op": "start", "options": {"destination": "mqtt"}})
                assert started["ok"], started
                time.sleep(1.0)
                assert central.command({"op": "stop"})["ok"]
                out, err = proc.communicate(timeout=30)
                result = Result(proc.returncode, events(out), err)
            finally:
                central.close()
        assert result.code == 0, result.stderr
        try:
            out, err = receiver.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no file arrived; the box said: {result.stderr[-3000:]}") from None
        assert receiver.returncode == 0, err
    finally:
        if receiver.poll() is None:
            receiver.kill()
    [row] = box.rows()
    [stored] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert stored["recording_id"] == row["id"] and stored["sha256"] == row["sha256"]
    assert Path(stored["path"]).read_bytes() == Path(row["path"]).read_bytes()  # byte for byte
    [available] = result.of("recording.available")
    assert available["data"]["location"] == stored["path"] or stored["path"] in available["data"]["location"]


def test_no_destination_no_upload(tmp_path):
    box = _box(tmp_path, {})
    result = box.run()
    assert result.code == 0
    assert not result.of("recording.available") and _uploads(tmp_path) == []
    assert events  # (imported for the other tests)
