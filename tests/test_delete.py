"""Deleting a recording: one rule whichever front end asks (MQTT, the HTTP API, the CLI beside a running box).

A recording whose upload is not confirmed is refused (its media would be lost) unless the caller forces it;
a forced delete cancels the upload and says so; every delete is audited, drops the API's converted copies,
and is published as recording.deleted.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time

import numpy as np
import requests

from firmware.catalog import Catalog

from .broker import free_port
from .daemon_run import ROOT, Box, counter_signal
from .http_servers import FlakyHttpServer
from .test_mqtt import BASE, Central

RATE = 8000
TOKEN = secrets.token_urlsafe(32)


def test_a_recording_not_uploaded_yet_is_deleted_only_when_forced_from_every_front_end(tmp_path, broker):
    central = Central(broker)
    with FlakyHttpServer(mode=503) as store:  # the upload destination is down: uploads stay pending
        port = free_port()
        box = Box.make(
            tmp_path,
            np.resize(counter_signal(8.0), 60 * RATE),
            RATE,
            mqtt={"url": broker.url, "heartbeat": 1.0, "command_auth": "broker"},
            upload={"destination": store.url + "/calls/"},
            http={"listen": f"127.0.0.1:{port}", "tokens": TOKEN},
            sim={"pace": "realtime"},
        )
        proc = box.start()
        try:
            central.wait_for(lambda t, p: t == f"{BASE}/status" and p == b"online")
            ids = []
            for _ in range(3):
                rec = central.command({"op": "start", "options": {"format": "wav"}})["recording"]
                time.sleep(0.3)
                assert central.command({"op": "stop", "target": rec["id"]})["ok"]
                ids.append(rec["id"])
            by_mqtt, by_http, by_cli = ids

            refused = central.command({"op": "delete", "id": by_mqtt})
            assert refused["ok"] is False and "not uploaded yet" in refused["error"] and store.url in refused["error"]
            forced = central.command({"op": "delete", "id": by_mqtt, "force": True})
            assert forced["ok"] and forced["recording"]["status"] == "deleted"

            api = requests.Session()
            api.trust_env = False
            api.headers["Authorization"] = f"Bearer {TOKEN}"
            url = f"http://127.0.0.1:{port}/v1/recordings/{by_http}"
            assert api.get(url + ".mp3", timeout=10).status_code == 200  # a converted copy in the cache
            assert list((tmp_path / "spool" / ".cache").glob(f"{by_http}-*"))
            no = api.delete(url, timeout=10)
            assert no.status_code == 409 and "not uploaded yet" in no.json()["message"]
            assert api.delete(url + "?force=true", timeout=10).status_code == 204
            assert not list((tmp_path / "spool" / ".cache").glob(f"{by_http}-*"))

            def cli(*args):
                argv = [sys.executable, "-m", "firmware.cli.main", "recordings", "--config", str(box.config)]
                return subprocess.run([*argv, "delete", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)

            no = cli(by_cli)
            assert no.returncode == 64 and "not uploaded yet" in no.stderr
            yes = cli(by_cli, "--force")
            assert yes.returncode == 0 and "cancelled" in yes.stdout

            def deleted():
                return {e["data"]["id"]: e["data"] for e in central.events() if e["type"] == "recording.deleted"}

            deadline = time.monotonic() + 20  # the CLI's event goes out through the running box's outbox
            while len(deleted()) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert set(deleted()) == set(ids)
            for data in deleted().values():
                assert data["status"] == "deleted"
                [cancelled] = data["cancelled_uploads"]
                assert cancelled["destination"] == store.url + "/calls/"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
            central.close()
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    try:
        audit = {r["target"]: r for r in catalog.query("SELECT * FROM audit WHERE action = 'delete'")}
        assert {rid: audit[rid]["actor"] for rid in ids} == {by_mqtt: "mqtt", by_http: "token#1", by_cli: "cli"}
        assert all("cancelled" in audit[rid]["detail"] for rid in ids)
        assert catalog.query("SELECT * FROM outbox WHERE kind = 'upload'") == []
        assert {u["state"] for u in catalog.query("SELECT state FROM uploads")} <= {"cancelled"}
        for rid in ids:
            row = catalog.get(rid)
            assert row["status"] == "deleted" and row["path"] is None
        assert not list((tmp_path / "spool").glob("RE*.wav"))
    finally:
        catalog.close()
