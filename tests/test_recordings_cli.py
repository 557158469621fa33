"""``edge-recorder recordings`` and ``decrypt`` as an installer runs them, on a catalog the box made.

The recordings are made the way the box makes them, without its threads: the
real session, audio loop, journal, spool and catalog, fed line audio made by
the test (speech, tones), started and stopped through the control API as the
record button or an MQTT command would. Uploads go out through the real
delivery worker to an HTTP receiver on loopback. The commands then run as a
separate process, as on the box.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyrage
import pytest
import soundfile as sf

from firmware import config as cfg
from firmware.catalog import Catalog
from firmware.cloudevents import CloudEvents, Timebase
from firmware.control import Control
from firmware.core import InputLayout, Session
from firmware.daemon.hardware import Hardware
from firmware.daemon.loop import AudioLoop, LoopSettings
from firmware.delivery.routes import Routes
from firmware.delivery.service import Delivery
from firmware.journal import Journal
from firmware.spool import Takes
from tests import signals as sig

from .alsa_file import SYSTEM_ALSA_CONF
from .daemon_run import ROOT, write_toml
from .http_servers import FlakyHttpServer

RATE = 8000
DEVICE = "desk-7"


def line(seconds: float, text: str = "Front desk, how can I help you?", channels: int = 1) -> np.ndarray:
    """A caller's sentence on a faint noise floor (and a tone on the local track when dual), as int16."""
    inbound = sig.noise(seconds, RATE, -60)
    sig.place(inbound, sig.speech(text, RATE)[: round((seconds - 0.2) * RATE)], 0.1, RATE)
    if channels == 1:
        return sig.to_int16(inbound)[:, :1]
    outbound = sig.noise(seconds, RATE, -55, seed=9)
    outbound += 3000 * np.sin(2 * np.pi * 440 * np.arange(outbound.size) / RATE)
    return sig.to_int16(inbound, outbound)


class Desk:
    """A box without threads or hardware: the test feeds the line and presses start and stop."""

    def __init__(self, root: Path, channels: int = 1, recipient: str | None = None, **sections: dict) -> None:
        self.root = root
        self.sections = {
            "device": {"id": DEVICE},
            "audio": {"sample_rate": RATE, "channels": channels},
            "recording": {"format": "wav", "sample_rate": RATE},
            "spool": {"directory": str(root / "spool")},
            "catalog": {"path": str(root / "catalog.sqlite3")},
        }
        for name, keys in sections.items():
            self.sections.setdefault(name, {}).update(keys)
        self.config = cfg.parse(self.sections)
        self.config_file = write_toml(root / "config.toml", self.sections)
        self.catalog = Catalog(root / "catalog.sqlite3")
        defaults = self.config.recording
        self.session = Session(InputLayout(RATE, channels), options=defaults)
        self.journal = Journal(
            self.catalog,
            Takes(root / "spool", RATE, file_names="id", encrypt_to=recipient),
            CloudEvents(DEVICE, Timebase(datetime.now(UTC), RATE)),
            routes=Routes(self.config, DEVICE).items,
            device_id=DEVICE,
            input_rate=RATE,
        )
        self.loop = AudioLoop(self.session, self.journal, Hardware(capture=None), LoopSettings(root, 0, 1.0, 1.0))
        self.journal.state = self.loop.state
        self.control = Control(
            self.loop, self.journal, defaults=lambda: defaults, destinations=self.config.upload_destinations
        )

    def record(self, audio: np.ndarray, **options) -> dict:
        """One recording of ``audio`` (the whole of it), started with ``options``; its catalog row."""
        rec = self.control.start(options, source="api")
        self.loop.feed(audio)
        self.control.stop(rec["id"])
        return self.catalog.get(rec["id"])

    def deliver(self) -> None:
        """Run the box's upload worker until every upload queued so far is confirmed or given up."""
        delivery = Delivery(
            self.config,
            self.catalog,
            device_id=DEVICE,
            envelope=self.journal.envelope_now,
            public=self.journal.public_row,
            snapshot=self.loop.state,
            clock_synced=lambda: True,
        )
        delivery.uploads.start()
        try:
            deadline = time.monotonic() + 30
            while self.catalog.outbox_depth("upload") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert self.catalog.outbox_depth("upload") == 0, "the uploads did not go out"
        finally:
            delivery.uploads.stop()

    def close(self) -> None:
        self.catalog.close()


def recordings(root: Path, *args, env: dict | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``edge-recorder recordings --state-dir ROOT ARGS`` (``--state-dir`` left out when ``args`` name where)."""
    where = () if {"-c", "--config", "--state-dir"} & set(map(str, args)) else ("--state-dir", str(root))
    argv = [*prefix, sys.executable, "-m", "firmware.cli.main", "recordings", *where, *map(str, args)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


def decrypt(*args) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "firmware.cli.main", "decrypt", *map(str, args)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-recorder: error: "), result.stderr
    return lines[0]


def table(text: str) -> list[dict[str, str]]:
    """The rows of ``recordings list`` by column, read at the header's column positions."""
    header, *rows = text.splitlines()
    names = header.split()
    starts = [header.index(f" {n} ") + 1 if i else 0 for i, n in enumerate(names[:-1])] + [header.rindex(names[-1])]
    bounds = [*starts[1:], None]
    return [{n: row[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)} for row in rows]


@pytest.fixture
def receiver():
    with FlakyHttpServer() as server:
        yield server


# -- show and list ---------------------------------------------------------------------------------


def test_show_lists_a_confirmed_upload_with_where_it_went_and_when(tmp_path, receiver):
    desk = Desk(tmp_path, upload={"destination": receiver.url + "/calls/"})
    try:
        sent = desk.record(line(1.5))
        desk.deliver()
        # finished, its upload not tried yet; its callback's URL carries the receiver's token
        waiting = desk.record(line(1.0), status_callback="https://central.example/cb?token=CALLBACK-SECRET")
    finally:
        desk.close()
    [put] = receiver.received
    shown = recordings(tmp_path, "show", sent["id"])
    assert shown.returncode == 0, shown.stderr
    assert "CALLBACK-SECRET" not in recordings(tmp_path, "show", waiting["id"]).stdout
    [upload] = json.loads(shown.stdout)["uploads"]
    assert upload["destination"] == receiver.url + "/calls/" and upload["state"] == "done"
    assert upload["location"].endswith(put.path)
    confirmed = datetime.fromisoformat(upload["date_confirmed"])
    assert abs((datetime.now(UTC) - confirmed).total_seconds()) < 60
    [queued] = json.loads(recordings(tmp_path, "show", waiting["id"]).stdout)["uploads"]
    assert (queued["destination"], queued["state"], queued["date_confirmed"]) == (
        receiver.url + "/calls/",
        "queued",
        None,
    )


def test_list_says_how_delivery_stands_and_shows_sizes_durations_and_names_as_people_read_them(tmp_path, receiver):
    with FlakyHttpServer(mode=415) as refusing:
        desk = Desk(
            tmp_path,
            destinations={"archive": {"url": receiver.url + "/calls/"}, "old": {"url": refusing.url + "/calls/"}},
        )
        try:
            delivered = desk.record(line(65.4), name="front desk", destination="archive")
            failed = desk.record(line(1.0), destination="old")
            desk.deliver()
            pending = desk.record(line(2.0), destination="archive")
            kept = desk.record(line(3.0))  # no destination: it stays on the box
        finally:
            desk.close()
    result = recordings(tmp_path, "list")
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in table(result.stdout)}
    assert list(rows) == [kept["id"], pending["id"], failed["id"], delivered["id"]]  # newest first
    assert {rid: r["delivery"] for rid, r in rows.items()} == {
        delivered["id"]: "delivered",
        failed["id"]: "failed",
        pending["id"]: "pending",
        kept["id"]: "-",
    }
    assert rows[delivered["id"]]["name"] == "front desk" and rows[kept["id"]]["name"] == "-"
    assert rows[delivered["id"]]["duration"] == "1:05" and rows[kept["id"]]["duration"] == "0:03"
    assert rows[delivered["id"]]["size"] == f"{delivered['size'] / 1e6:.1f} MB" == "1.0 MB"
    assert rows[kept["id"]]["size"] == f"{kept['size'] / 1e3:.1f} kB"
    listed = json.loads(recordings(tmp_path, "list", "--json").stdout)
    by_id = {r["id"]: r for r in listed}
    assert by_id[delivered["id"]]["size"] == delivered["size"] and by_id[delivered["id"]]["duration"] == 65.4
    assert by_id[delivered["id"]]["name"] == "front desk" and by_id[failed["id"]]["delivery"] == "failed"
    assert {r["delivery"] for r in listed} == {"delivered", "failed", "pending", "-"}
    assert [u["state"] for u in by_id[delivered["id"]]["uploads"]] == ["done"]  # the fields it had stay


# -- export ------------------------------------------------------------------------------------------


def test_export_writes_the_format_its_file_name_asks_for(tmp_path, receiver):
    desk = Desk(tmp_path)
    try:
        mp3 = desk.record(line(2.0), format="mp3")
        wav = desk.record(line(2.0, "Please hold the line."), format="wav")
    finally:
        desk.close()
    out = tmp_path / "out"
    out.mkdir()

    assert recordings(tmp_path, "export", mp3["id"], out / "call.wav").returncode == 0
    assert sf.info(out / "call.wav").format == "WAV"
    recorded, _ = sf.read(mp3["path"], dtype="int16")
    exported, _ = sf.read(out / "call.wav", dtype="int16")
    assert exported.shape == recorded.shape  # the MP3's samples, without the encoder's delay and padding
    assert np.abs(exported.astype(int) - recorded).max() <= 1  # the decoder's float rounding, read in pieces

    assert recordings(tmp_path, "export", wav["id"], out / "call.mp3").returncode == 0
    assert sf.info(out / "call.mp3").format == "MP3"
    assert sf.info(out / "call.mp3").frames == sf.info(wav["path"]).frames  # gapless

    odd = recordings(tmp_path, "export", wav["id"], out / "call.ogg")
    assert odd.returncode == 64 and ".wav" in one_error_line(odd) and ".mp3" in odd.stderr
    assert not (out / "call.ogg").exists()

    before = (out / "call.wav").read_bytes()
    again = recordings(tmp_path, "export", wav["id"], out / "call.wav")
    assert again.returncode == 73
    assert one_error_line(again).endswith(f"{out / 'call.wav'}: exists (use --force to replace it)")
    assert (out / "call.wav").read_bytes() == before
    assert recordings(tmp_path, "export", wav["id"], out / "call.wav", "--force").returncode == 0
    exported, _ = sf.read(out / "call.wav", dtype="int16")
    np.testing.assert_array_equal(exported, sf.read(wav["path"], dtype="int16")[0])

    into = recordings(tmp_path, "export", mp3["id"], out)  # a folder: the file as it is, named after it
    assert into.returncode == 0 and into.stdout.strip() == str(out / f"{mp3['id']}.mp3")
    assert (out / f"{mp3['id']}.mp3").read_bytes() == Path(mp3["path"]).read_bytes()
    assert recordings(tmp_path, "export", mp3["id"], out).returncode == 73
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "no temporary file is left behind"


@pytest.fixture(scope="module")
def key() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


def test_an_encrypted_recording_is_exported_only_as_it_is(tmp_path, key):
    desk = Desk(tmp_path, recipient=str(key.to_public()))
    try:
        sealed = desk.record(line(1.5), format="mp3")
    finally:
        desk.close()
    assert sealed["path"].endswith(".era")
    refused = recordings(tmp_path, "export", sealed["id"], tmp_path / "call.wav")
    assert refused.returncode == 69 and "encrypted" in one_error_line(refused)
    assert "edge-recorder decrypt" in refused.stderr and not (tmp_path / "call.wav").exists()
    assert recordings(tmp_path, "export", sealed["id"], tmp_path / "call.era").returncode == 0
    assert (tmp_path / "call.era").read_bytes() == Path(sealed["path"]).read_bytes()
    played = recordings(tmp_path, "-c", desk.config_file, "play", sealed["id"])
    assert (
        played.returncode == 69 and "encrypted" in one_error_line(played) and "edge-recorder decrypt" in played.stderr
    )


# -- decrypt -------------------------------------------------------------------------------------------


def test_decrypt_writes_the_format_its_output_name_asks_for(tmp_path, key):
    desk = Desk(tmp_path, recipient=str(key.to_public()))
    try:
        sealed = desk.record(line(1.5), format="mp3")  # the central side would get an MP3 by default
    finally:
        desk.close()
    keyfile = tmp_path / "central.key"
    keyfile.write_text(f"{key}\n")
    era = Path(sealed["path"])

    assert decrypt(era, "-i", keyfile, "-o", tmp_path / "call.wav").returncode == 0
    assert sf.info(tmp_path / "call.wav").format == "WAV"
    assert decrypt(era, "-i", keyfile, "-o", tmp_path / "call.mp3").returncode == 0
    assert sf.info(tmp_path / "call.mp3").format == "MP3"
    assert sf.info(tmp_path / "call.mp3").frames == sf.info(tmp_path / "call.wav").frames

    odd = decrypt(era, "-i", keyfile, "-o", tmp_path / "call.flac")
    assert odd.returncode == 64 and ".wav" in one_error_line(odd) and ".mp3" in odd.stderr
    clash = decrypt(era, "-i", keyfile, "--format", "mp3", "-o", tmp_path / "other.wav")
    assert clash.returncode == 64 and "--format mp3" in one_error_line(clash)
    raw = decrypt(era, "-i", keyfile, "--raw", "-o", tmp_path / "raw.mp3")
    assert raw.returncode == 64 and "--raw" in one_error_line(raw)
    assert not {"call.flac", "other.wav", "raw.mp3"} & {p.name for p in tmp_path.iterdir()}
    assert decrypt(era, "-i", keyfile, "--format", "wav", "-o", tmp_path / "agree.wav").returncode == 0
    kept = decrypt(era, "-i", keyfile, "-o", tmp_path / "call.wav")
    assert kept.returncode == 73 and "--force" in kept.stderr
    assert decrypt(era, "-i", keyfile, "-o", tmp_path / "call.wav", "--force").returncode == 0


# -- naming a recording --------------------------------------------------------------------------------


def test_a_unique_prefix_names_a_recording_and_an_ambiguous_one_lists_the_candidates(tmp_path, receiver):
    desk = Desk(tmp_path, upload={"destination": receiver.url + "/calls/"})
    try:
        row = desk.record(line(1.0))
        desk.deliver()
        rid = row["id"]
        # a second recording whose id shares the first 10 characters: a catalog row as the box adopts one
        twin = rid[:10] + ("0" if rid[10] != "0" else "1") + rid[11:]
        desk.catalog.upsert({**row, "id": twin, "path": None, "status": "failed"})
    finally:
        desk.close()
    shown = recordings(tmp_path, "show", rid[:11])
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == rid
    both = recordings(tmp_path, "show", rid[:10])
    assert both.returncode == 64 and rid in one_error_line(both) and twin in both.stderr
    short = recordings(tmp_path, "show", rid[:3])
    assert short.returncode == 66 and "at least 4" in one_error_line(short)
    none = recordings(tmp_path, "show", "RE" + "f" * 8)
    assert none.returncode == 66 and "no recording" in one_error_line(none)
    out = tmp_path / "out"
    out.mkdir()
    exported = recordings(tmp_path, "export", rid[:11], out)
    assert exported.returncode == 0 and (out / Path(row["path"]).name).exists()
    gone = recordings(tmp_path, "delete", rid[:11])
    assert gone.returncode == 0 and gone.stdout.startswith(f"{rid}: deleted")
    assert json.loads(recordings(tmp_path, "show", rid).stdout)["status"] == "deleted"


def test_where_the_catalog_is_may_be_said_before_or_after_the_verb(tmp_path):
    desk = Desk(tmp_path)
    try:
        row = desk.record(line(1.0))
    finally:
        desk.close()
    state, config = str(tmp_path), str(desk.config_file)
    listed = {
        recordings(tmp_path, "--state-dir", state, "list", "--json").stdout,
        recordings(tmp_path, "list", "--json", "--state-dir", state).stdout,
        recordings(tmp_path, "-c", config, "list", "--json").stdout,
        recordings(tmp_path, "list", "--json", "--config", config).stdout,
    }
    [same] = listed
    assert [r["id"] for r in json.loads(same)] == [row["id"]]
    for args in (("-c", config, "show", row["id"]), ("show", row["id"], "-c", config)):
        shown = recordings(tmp_path, *args)
        assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == row["id"], shown.stderr
    # said after the verb, it wins over what was said before
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = recordings(tmp_path, "--state-dir", state, "list", "--state-dir", elsewhere)
    assert missing.returncode == 66 and str(elsewhere) in missing.stderr


# -- play --------------------------------------------------------------------------------------------


def alsa_playback_file(tmp_path: Path, name: str = "edgeplay") -> tuple[dict[str, str], Path]:
    """An ALSA playback PCM that writes what it is given to a raw file (``file`` plugin, ``null`` slave)."""
    raw = tmp_path / f"{name}.s16"
    conf = tmp_path / f"{name}.asound.conf"
    conf.write_text(
        f"<{SYSTEM_ALSA_CONF}>\n"
        f"pcm.{name} {{\n"
        "    type file\n"
        '    slave.pcm "null"\n'
        f'    file "{raw}"\n'
        '    format "raw"\n'
        "}\n"
    )
    return dict(os.environ, ALSA_CONFIG_PATH=str(conf)), raw


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_play_sends_the_recordings_samples_to_the_playback_device(tmp_path, fmt):
    env, raw = alsa_playback_file(tmp_path)
    desk = Desk(tmp_path, channels=2, audio={"playback": "edgeplay"})
    try:
        row = desk.record(line(1.5, channels=2), format=fmt, channels="dual")
    finally:
        desk.close()
    played = recordings(tmp_path, "-c", desk.config_file, "play", row["id"][:8], env=env)
    assert played.returncode == 0, played.stderr
    recorded, rate = sf.read(row["path"], dtype="int16", always_2d=True)
    assert rate == RATE and recorded.shape[1] == 2
    mono = recorded.astype(np.int32).mean(axis=1).astype(np.int16)  # both tracks, as one speaker hears them
    np.testing.assert_array_equal(np.fromfile(raw, "<i2"), mono)


def test_play_without_a_playback_device_says_which_key_to_set(tmp_path):
    desk = Desk(tmp_path)
    try:
        row = desk.record(line(1.0))
    finally:
        desk.close()
    result = recordings(tmp_path, "-c", desk.config_file, "play", row["id"])
    assert result.returncode == 78 and "[audio] playback" in one_error_line(result)


# -- permissions ------------------------------------------------------------------------------------


def _without_root_powers() -> tuple[str, ...]:
    """Run as root without the power to read other users' files, as a plain user is."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the files must belong to another user")
    setpriv = shutil.which("setpriv")
    drop = (setpriv or "setpriv", "--bounding-set=-dac_override,-dac_read_search")
    if setpriv is None or subprocess.run([*drop, "true"], capture_output=True).returncode != 0:
        pytest.skip("setpriv cannot drop CAP_DAC_OVERRIDE here")
    return drop


@pytest.mark.parametrize("locked", ["folder", "file"])
def test_a_user_who_may_not_read_the_catalog_is_told_whom_to_run_as(tmp_path, locked):
    prefix = _without_root_powers()
    state = tmp_path / "state"
    state.mkdir()
    desk = Desk(state)
    try:
        desk.record(line(1.0))
    finally:
        desk.close()
    shutil.chown(state, "nobody", "nogroup")
    for path in state.rglob("*"):
        shutil.chown(path, "nobody", "nogroup")
    if locked == "folder":  # as systemd makes /var/lib/edge-recorder: StateDirectoryMode=0750
        state.chmod(0o750)
    else:
        (state / "catalog.sqlite3").chmod(0o600)
    result = recordings(state, "list", prefix=prefix)
    assert result.returncode == 77, result.stderr
    message = one_error_line(result)
    assert str(state / ("catalog.sqlite3" if locked == "file" else "")).rstrip("/") in message
    assert "run it as nobody (sudo -u nobody edge-recorder recordings --state-dir" in message


def test_a_user_who_may_not_read_the_config_is_told_whom_to_run_as(tmp_path):
    prefix = _without_root_powers()
    etc = tmp_path / "etc"
    etc.mkdir()
    config = write_toml(etc / "config.toml", {"catalog": {"path": str(tmp_path / "catalog.sqlite3")}})
    shutil.chown(etc, "nobody", "nogroup")
    shutil.chown(config, "nobody", "nogroup")
    etc.chmod(0o750)  # as /etc/edge-recorder: root:edge-recorder 0750
    result = recordings(tmp_path, "-c", config, "list", prefix=prefix)
    assert result.returncode == 77, result.stderr
    assert "run it as nobody" in one_error_line(result) and str(etc) in result.stderr
