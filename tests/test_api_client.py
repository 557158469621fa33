"""A client generated from the box's OpenAPI document works against the running box.

``openapi-python-client`` (offline, from the document alone) writes a client package into a temporary
folder; the test imports it and calls the box with a token. A document the generator cannot read whole
(an operation it skips, a response it cannot type) fails here: the document is what central servers
build their clients from.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.frontends.http.server import OPENAPI

from .test_api import TOKEN, _record

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "edge_recorder_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The client package generated from openapi.json, importable, and how long the generator took."""
    root = tmp_path_factory.mktemp("generated")
    config = root / "generator.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run over the output: the code is used as generated
    started = time.monotonic()
    result = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(OPENAPI),
            "--meta",
            "none",
            "--output-path",
            str(root / PACKAGE),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    took = time.monotonic() - started
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE), said, took
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_the_generator_reads_every_operation_and_response_of_the_document_quickly(generated):
    package, said, took = generated
    assert "Warning" not in said and "will not be generated" not in said, said
    assert took < 30, took
    operations = {p.stem for p in Path(package.__file__).parent.joinpath("api").rglob("*.py")} - {"__init__"}
    assert {"download_recording_media", "create_recording", "list_twilio_recordings"} <= operations, operations


def test_a_generated_client_downloads_media_and_reads_recordings(api, generated):
    package = generated[0]
    download = importlib.import_module(f"{PACKAGE}.api.default.download_recording_media")
    fetch = importlib.import_module(f"{PACKAGE}.api.default.fetch_recording")
    done = _record(api, 1.0)
    stored = Path(api.box.catalog.get(done["id"])["path"]).read_bytes()
    client = package.AuthenticatedClient(base_url=api.url, token=TOKEN, httpx_args={"trust_env": False})
    wav = download.sync_detailed(done["id"], download.DownloadRecordingMediaFormat.WAV, client=client)
    assert wav.status_code == 200 and wav.parsed.payload.read() == stored
    mp3 = download.sync_detailed(done["id"], download.DownloadRecordingMediaFormat.MP3, client=client)
    assert mp3.status_code == 200 and mp3.content[0] == 0xFF and mp3.headers["Content-Type"] == "audio/mpeg"
    recording = fetch.sync(done["id"], client=client)
    assert recording.id == done["id"] and recording.duration == done["duration"]
    unauthorised = package.Client(base_url=api.url, httpx_args={"trust_env": False})
    denied = download.sync_detailed(done["id"], download.DownloadRecordingMediaFormat.WAV, client=unauthorised)
    assert denied.status_code == 401 and denied.parsed.code == "unauthorised"
