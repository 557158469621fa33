"""The local Recordings API on a running box: auth, recordings, media with Range, signed links, errors, metrics."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from firmware import config as cfg
from firmware.daemon.app import Box

from .broker import _certificates, free_port
from .daemon_run import Box as BoxFiles
from .daemon_run import counter_signal

RATE = 8000
TOKEN = secrets.token_urlsafe(32)


class Running:
    """A box running in this process with its API on a free loopback port; ``sections`` are other config sections."""

    def __init__(self, tmp_path: Path, seconds: float = 30.0, sections: dict | None = None, **http) -> None:
        ca = http.pop("ca", None)
        self.port = free_port()
        files = BoxFiles.make(
            tmp_path,
            np.resize(counter_signal(8.0), int(seconds * RATE)),
            RATE,
            http={"listen": f"127.0.0.1:{self.port}", "tokens": TOKEN, "failed_logins": 5, **http},
            sim={"pace": "realtime"},
            **(sections or {}),
        )
        self.box = Box(cfg.load(files.config))
        self.thread = threading.Thread(target=self.box.run)
        self.thread.start()
        scheme = "https" if http.get("tls_cert") else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override verify below
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"
        if ca:
            self.session.verify = ca
        deadline = time.monotonic() + 15
        problem = None
        while time.monotonic() < deadline:
            try:
                self.session.get(self.url + "/v1/health", timeout=1)
                return
            except requests.ConnectionError as exc:
                problem = exc
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the API did not come up: {problem}")

    def get(self, path: str, **kw):
        return self.session.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, body=None, **kw):
        return self.session.post(self.url + path, json=body, timeout=10, **kw)

    def stop(self) -> None:
        self.box.stop()
        self.thread.join(timeout=30)


def test_health_and_the_openapi_document_need_no_token_and_the_rest_does(api):
    bare = requests.get(api.url + "/v1/health", timeout=5)
    assert bare.status_code == 200 and bare.json()["status"] == "ok"
    doc = requests.get(api.url + "/v1/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.") and "/v1/recordings" in doc["paths"]
    for path in ("/v1/recordings", "/metrics"):
        denied = requests.get(api.url + path, timeout=5)
        assert denied.status_code == 401 and "bearer token" in denied.json()["message"]
    wrong = requests.get(api.url + "/v1/recordings", headers={"Authorization": "Bearer " + "x" * 43}, timeout=5)
    assert wrong.status_code == 401 and wrong.json()["message"] == "the credentials are not valid"


def test_failed_logins_are_limited_and_audited(api):
    codes = [
        requests.get(api.url + "/v1/recordings", headers={"Authorization": "Bearer nope"}, timeout=5).status_code
        for _ in range(7)
    ]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    # A token of 128 random bits cannot be guessed: the central server behind the same address (a reverse
    # proxy, a NAT) goes on working while the guesser waits.
    assert api.get("/v1/recordings").status_code == 200
    audit = api.box.catalog.query("SELECT action, actor FROM audit")
    assert [a["action"] for a in audit].count("failed_login") == 5


def test_a_token_that_is_not_utf8_and_a_bent_link_are_failed_logins_like_any_other(api):
    """Bytes that are not UTF-8 in a bearer token are a wrong token (401, counted), not a 400 about codecs;
    a bent signed link is a failed login too, so neither kind of guessing escapes the limit (5 here)."""
    import http.client

    def raw_token() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        conn.putrequest("GET", "/v1/recordings")
        conn.putheader("Authorization", b"Bearer \xff\xfe")
        conn.endheaders()
        status = conn.getresponse().status
        conn.close()
        return status

    assert [raw_token() for _ in range(3)] == [401] * 3
    bent = requests.get(f"{api.url}/v1/links/9999999999/{'0' * 64}/recordings/RE{'1' * 32}.wav", timeout=5)
    assert bent.status_code == 403
    query = requests.get(f"{api.url}/v1/recordings/RE{'1' * 32}.wav?expires=9999999999&signature=00", timeout=5)
    assert query.status_code == 403
    assert raw_token() == 429, "five failures of either kind block the address for guessing"
    audit = [a["action"] for a in api.box.catalog.query("SELECT action FROM audit")]
    assert audit.count("failed_login") == 5


def test_start_pause_resume_stop_and_current(api):
    one = api.post("/v1/recordings", {"name": "monitor", "format": "wav", "sample_rate": 8000})
    assert one.status_code == 201, one.text
    rec = one.json()["recording"]
    assert rec["source"] == "api" and rec["status"] == "in-progress" and rec["name"] == "monitor"
    paused = api.post("/v1/recordings/current", {"status": "paused", "pause_behavior": "skip"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    again = api.post(f"/v1/recordings/{rec['id']}", {"status": "paused"}).json()  # says which state clashed
    assert (again["status"], again["state"], again["trigger"], again["recording"]) == (
        409,
        "paused",
        "pause",
        "monitor",
    )
    api.post("/v1/recordings", {"name": "second", "format": "wav", "sample_rate": 8000})
    both = api.post("/v1/recordings/current", {"status": "stopped"})
    assert both.status_code == 409 and "2 are active" in both.json()["message"]
    assert api.post(f"/v1/recordings/{rec['id']}", {"status": "in-progress"}).json()["status"] == "in-progress"
    time.sleep(0.5)
    done = api.post(f"/v1/recordings/{rec['id']}", {"status": "stopped"}).json()
    assert done["status"] == "completed" and done["end_reason"] == "stop"
    assert api.post("/v1/recordings/second", {"status": "stopped"}).status_code == 404  # by id only over HTTP paths
    assert api.post("/v1/recordings/current", {"status": "stopped"}).status_code == 200


def test_bad_requests_get_json_errors_with_fitting_codes(api):
    cases = [
        (api.post("/v1/recordings", {"format": "ogg"}), 422, "format: 'ogg' is not valid"),
        (api.post("/v1/recordings", {"colour": "red"}), 422, "colour"),
        (api.session.post(api.url + "/v1/recordings", data=b"{nope", timeout=5), 400, "not JSON"),
        (api.session.post(api.url + "/v1/recordings", data=b"[1]", timeout=5), 400, "JSON object"),
        (api.session.post(api.url + "/v1/recordings", data=b"x" * 70000, timeout=5), 413, "65536-byte limit"),
        (api.post("/v1/recordings/current", {"status": "stopped"}), 409, "0 are active"),
        (api.post("/v1/recordings/current", {"status": "exploded"}), 422, "paused, in-progress or stopped"),
        (api.get("/v1/recordings/RE" + "0" * 32), 404, "no recording"),
        (api.get("/v1/recordings/hello"), 404, "not a recording id"),
        (api.get("/v1/recordings?page_size=0"), 422, "page_size"),
        (api.get("/v1/recordings?date_created=yesterday"), 422, "date_created"),
        (api.get("/v1/recordings?page_token=garbage"), 422, "page_token"),
        (api.session.put(api.url + "/v1/recordings", timeout=5), 405, "PUT is not allowed"),
    ]
    put = cases[-1][0]
    assert set(put.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}  # what is allowed, on a 405
    for response, status, text in cases:
        assert response.status_code == status, (response.status_code, response.text)
        body = response.json()
        assert body["status"] == status and text in body["message"], body


def _record(api, seconds: float, **options) -> dict:
    rec = api.post("/v1/recordings", {"format": "wav", "sample_rate": 8000, **options}).json()["recording"]
    time.sleep(seconds)
    return api.post(f"/v1/recordings/{rec['id']}", {"status": "stopped"}).json()


def test_media_with_range_conversion_channels_and_signed_links(api):
    done = _record(api, 1.0)
    stored = Path(api.box.catalog.get(done["id"])["path"]).read_bytes()
    whole = api.get(f"/v1/recordings/{done['id']}.wav")
    assert whole.status_code == 200 and whole.content == stored and whole.headers["Content-Type"] == "audio/wav"
    part = api.get(f"/v1/recordings/{done['id']}.wav", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == stored[100:200]
    mp3 = api.get(f"/v1/recordings/{done['id']}.mp3")
    assert (
        mp3.status_code == 200
        and mp3.headers["Content-Type"] == "audio/mpeg"
        and mp3.content[0] == 0xFF
        and mp3.content[1] & 0xE0 == 0xE0  # an MPEG frame sync
    )
    assert api.get(f"/v1/recordings/{done['id']}.wav?RequestedChannels=2").status_code == 404  # mono: as Twilio's
    assert api.get(f"/v1/recordings/{done['id']}.wav?RequestedChannels=1").status_code == 200
    # the signed link from media_url works without a token, and only for its path and until it expires
    link = done["media_url"]
    assert "signature=" in link
    plain = requests.get(link, timeout=5)
    assert plain.status_code == 200 and plain.content == stored
    tampered = requests.get(link.replace(done["id"], "RE" + "1" * 32), timeout=5)
    assert tampered.status_code == 403
    expired = requests.get(link.split("?")[0] + "?expires=1000&signature=" + link.split("signature=")[1], timeout=5)
    assert expired.status_code == 403
    actions = [a["action"] for a in api.box.catalog.query("SELECT action FROM audit")]
    assert actions.count("download") >= 4  # one per download; a Range request past the start is not one


def test_list_filters_paging_and_soft_delete(api):
    ids = [_record(api, 0.2)["id"] for _ in range(3)]
    page = api.get("/v1/recordings?page_size=2").json()
    assert [r["id"] for r in page["recordings"]] == ids[::-1][:2]  # newest first
    rest = api.get(page["meta"]["next_page_url"]).json()
    assert [r["id"] for r in rest["recordings"]] == [ids[0]] and rest["meta"]["next_page_url"] is None
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(api.get(f"/v1/recordings?date_created={today}").json()["recordings"]) == 3
    assert api.get("/v1/recordings?date_created=<2000-01-01").json()["recordings"] == []
    assert len(api.get(f"/v1/recordings?DateCreated<={today}").json()["recordings"]) == 3  # Twilio's form
    assert len(api.get("/v1/recordings?date_created=>=2000-01-01").json()["recordings"]) == 3
    live = api.post("/v1/recordings", {"format": "wav"}).json()["recording"]
    assert api.session.delete(f"{api.url}/v1/recordings/{live['id']}", timeout=5).status_code == 409
    api.post("/v1/recordings/current", {"status": "stopped"})
    gone = api.session.delete(f"{api.url}/v1/recordings/{ids[0]}", timeout=5)
    assert gone.status_code == 204
    assert ids[0] not in [r["id"] for r in api.get("/v1/recordings").json()["recordings"]]
    soft = api.get("/v1/recordings?include_soft_deleted=true").json()["recordings"]
    assert [r["status"] for r in soft if r["id"] == ids[0]] == ["deleted"]
    assert api.get(f"/v1/recordings/{ids[0]}.wav").status_code == 404
    assert api.get(f"/v1/recordings?call_id={live['call_id']}").json()["recordings"]


def test_metrics_in_prometheus_text_format(api):
    _record(api, 0.3)
    text = api.get("/metrics").text
    for name in (
        'edge_recorder_recordings{status="completed"} 1.0',
        "edge_recorder_recording_bytes ",
        "edge_recorder_upload_backlog 0.0",
        "edge_recorder_outbox_depth ",
        "edge_recorder_xruns_total 0.0",
        "edge_recorder_free_storage_bytes ",
    ):
        assert name in text, name


def test_https_when_a_certificate_is_configured(tmp_path):
    ca, cert, key = _certificates(tmp_path)
    running = Running(tmp_path / "box", tls_cert=str(cert), tls_key=str(key), ca=str(ca))
    try:
        assert running.url.startswith("https://")
        assert running.get("/v1/recordings").status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(running.url + "/v1/health", timeout=5)  # not trusted without the CA
    finally:
        running.stop()


#: schemathesis's settings for this API. A page_token is opaque (what a next_page_url carries), so a real one is
#: used, and so is the box's AccountSid on Twilio's routes (another is a 404 before anything else is looked at).
#: A start body's schema cannot say all that the box refuses: which destinations exist is the box's config
#: (422 for one it lacks), and a vendor document is read by the vendor's grammar (400 for one the box cannot read);
#: a body past max_body_bytes is a 413. All of them are refusals that name the problem.
SCHEMATHESIS_CONFIG = """
[[operations]]
include-path = "/v1/recordings"
include-method = "GET"
parameters = {{ "query.page_token" = "{page_token}" }}

[[operations]]
include-operation-id-regex = "^listTwilio"
parameters = {{ "path.AccountSid" = "{account_sid}", "query.PageToken" = "{page_token}" }}

[[operations]]
include-path-regex = "^/2010-04-01/"
parameters = {{ "path.AccountSid" = "{account_sid}" }}

[[operations]]
include-path = "/v1/recordings"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422", "429"]
checks.negative_data_rejection.expected-statuses = ["400", "401", "403", "404", "409", "413", "422", "429"]
"""


def test_the_running_api_matches_its_openapi_document_by_every_check(tmp_path, monkeypatch):
    """schemathesis with all of its checks: conformance both ways (a valid request is taken, an invalid one refused),
    auth (a bad token is refused), resources (a deleted recording is gone), no 5xx."""
    client_env = dict(os.environ)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        client_env.pop(name, None)
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):  # the status callbacks it makes up go nowhere, not to the internet
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    # failed_logins: so that the limiter does not hide the rest behind a 429; the line lasts longer than the run
    api = Running(tmp_path / "box", seconds=180.0, failed_logins=1000)
    try:
        first = api.box.catalog.get(_record(api, 0.2)["id"])
        token = base64.urlsafe_b64encode(json.dumps([first["date_created"], 1]).encode()).decode()
        config = tmp_path / "schemathesis.toml"
        config.write_text(SCHEMATHESIS_CONFIG.format(page_token=token, account_sid=api.box.control.account_sid))
        started = time.monotonic()
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--config-file",
                str(config),
                "run",
                str(Path(__file__).resolve().parent.parent / "firmware" / "frontends" / "http" / "openapi.json"),
                "--url",
                api.url,
                "-H",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                "all",
                "--max-examples",
                "25",
                "--request-timeout",
                "30",  # a loaded CI machine: the API's own limits, not the client's, are what is tested
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,  # schemathesis keeps its state in the working directory
            env=client_env,
        )
        took = time.monotonic() - started
    finally:
        api.stop()
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
    assert took < 60, took


def test_post_takes_a_vendor_document_and_lists_what_cannot_be_honoured(api):
    swml = {"swml": {"record_call": {"control_id": "front", "stereo": False, "format": "wav", "beep": True}}}
    started = api.post("/v1/recordings", swml)
    assert started.status_code == 201, started.text
    assert started.json()["recording"]["name"] == "front" and started.json()["unsupported"] == []
    stop = api.post("/v1/recordings", {"twiml": '<Response><Stop><Recording name="front"/></Stop></Response>'})
    assert stop.status_code == 200 and stop.json()["recording"]["end_reason"] == "stop"
    bad = api.post("/v1/recordings", {"twiml": "<Response><Start>"})
    assert bad.status_code == 400 and "twilio" in bad.json()["message"]


def test_every_operation_has_a_unique_operation_id_for_generated_clients():
    from firmware.frontends.http.server import OPENAPI

    document = json.loads(OPENAPI.read_text())
    ids = [
        op.get("operationId")
        for ops in document["paths"].values()
        for method, op in ops.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert all(ids) and len(set(ids)) == len(ids), ids
    media = document["paths"]["/v1/recordings/{name}"]["get"]["responses"]["200"]["content"]
    assert {media[kind]["schema"].get("format") for kind in ("audio/wav", "audio/mpeg")} == {"binary"}


# -- links that take an extension (Twilio's RecordingUrl) ---------------------------------------------------------


def test_recording_url_serves_the_media_with_wav_or_mp3_appended_and_without_a_token(api):
    done = _record(api, 1.0)
    row = api.box.catalog.get(done["id"])
    stored = Path(row["path"]).read_bytes()
    link = api.box.api.recording_url(row)
    assert link.startswith(api.url + "/v1/links/") and link.endswith("/" + done["id"]) and "?" not in link
    own = requests.get(link, timeout=5)  # no extension: the recording's own format
    assert own.status_code == 200 and own.content == stored and own.headers["Content-Type"] == "audio/wav"
    wav = requests.get(link + ".wav", timeout=5)
    assert wav.status_code == 200 and wav.content == stored
    mp3 = requests.get(link + ".mp3", timeout=5)
    assert mp3.status_code == 200 and mp3.headers["Content-Type"] == "audio/mpeg" and mp3.content[0] == 0xFF
    assert requests.get(link + ".wav?RequestedChannels=1", timeout=5).content == stored  # as Twilio's RecordingUrl
    octets = requests.get(link + ".wav", headers={"Accept": "application/octet-stream"}, timeout=5)
    assert octets.headers["Content-Type"] == "application/octet-stream" and octets.content == stored
    assert api.box.api.recording_url({"path": None}) is None  # no recording, no link
    audited = [a["actor"] for a in api.box.catalog.query("SELECT actor FROM audit WHERE action = 'download'")]
    assert audited == ["signed-link"] * 5


def test_recording_url_without_an_extension_serves_an_mp3_recording_as_mp3(api):
    done = _record(api, 1.0, format="mp3")
    row = api.box.catalog.get(done["id"])
    own = requests.get(api.box.api.recording_url(row), timeout=5)
    assert own.status_code == 200 and own.headers["Content-Type"] == "audio/mpeg"
    assert own.content == Path(row["path"]).read_bytes()


# -- Vonage: media fetched with the application's JWT (Vonage's Voice API recording guide) --------------------------

VONAGE_APP = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"


def rsa_key_pair(bits: int = 2048) -> tuple[str, str]:
    """A new RSA key pair as PEM text: the private key (PKCS#8, as Vonage hands it out) and its public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private.decode(), public.decode()


@pytest.fixture(scope="module")
def vonage_keys():
    return rsa_key_pair()


@pytest.fixture
def vonage_box(tmp_path, vonage_keys):
    """A box whose API takes the JWTs of one Vonage application for media, its public key in a file."""
    key_file = tmp_path / "vonage-application.pub"
    key_file.write_text(vonage_keys[1])
    running = Running(
        tmp_path / "box", vonage_public_key=str(key_file), vonage_application_id=VONAGE_APP, failed_logins=6
    )
    yield running
    running.stop()


def test_a_jwt_from_vonages_library_downloads_media_and_nothing_else(vonage_box, vonage_keys):
    from vonage_jwt import JwtClient

    api = vonage_box
    done = _record(api, 1.0)
    stored = Path(api.box.catalog.get(done["id"])["path"]).read_bytes()
    jwt = JwtClient(VONAGE_APP, vonage_keys[0]).generate_application_jwt().decode()
    bearer = {"Authorization": f"Bearer {jwt}"}
    wav = requests.get(f"{api.url}/v1/recordings/{done['id']}.wav", headers=bearer, timeout=5)
    assert wav.status_code == 200 and wav.content == stored
    mp3 = requests.get(f"{api.url}/v1/recordings/{done['id']}.mp3", headers=bearer, timeout=5)
    assert mp3.status_code == 200 and mp3.headers["Content-Type"] == "audio/mpeg"
    twilio = f"{api.url}/2010-04-01/Accounts/{api.box.control.account_sid}/Recordings/{done['id']}.wav"
    assert requests.get(twilio, headers=bearer, timeout=5).content == stored
    actors = [a["actor"] for a in api.box.catalog.query("SELECT actor FROM audit WHERE action = 'download'")]
    assert actors == [f"vonage:{VONAGE_APP}"] * 3
    for method, path in (
        ("GET", "/v1/recordings"),
        ("GET", f"/v1/recordings/{done['id']}"),
        ("GET", f"/v1/recordings/{done['id']}.json"),
        ("GET", "/metrics"),
        ("POST", "/v1/recordings"),
        ("POST", f"/v1/recordings/{done['id']}"),
        ("DELETE", f"/v1/recordings/{done['id']}"),
        ("GET", f"/2010-04-01/Accounts/{api.box.control.account_sid}/Recordings.json"),
    ):
        refused = requests.request(method, api.url + path, headers=bearer, json={}, timeout=5)
        assert refused.status_code == 403 and "media" in refused.json()["message"], (method, path, refused.text)
    assert api.get(f"/v1/recordings/{done['id']}").json()["status"] == "completed"  # nothing was changed


def _unsigned(header: dict, payload: dict, key: bytes | None = None) -> str:
    """A JWT put together by hand: ``alg: none`` (no signature), or HS256 keyed with ``key``."""
    import hashlib
    import hmac

    def part(value) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing = f"{part(header)}.{part(payload)}"
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing}.{part(signature)}"


def test_forged_expired_or_foreign_vonage_jwts_are_refused_as_failed_logins(vonage_box, vonage_keys):
    from vonage_jwt import JwtClient

    api = vonage_box
    done = _record(api, 0.3)
    now = int(time.time())
    claims = {"application_id": VONAGE_APP, "iat": now, "jti": "j-1", "exp": now + 900}
    other_private, _ = rsa_key_pair()
    cases = [
        (JwtClient(VONAGE_APP, other_private).generate_application_jwt(), "signature"),
        (
            JwtClient(VONAGE_APP, vonage_keys[0]).generate_application_jwt({"iat": now - 3600, "exp": now - 1800}),
            "expired",
        ),
        (_unsigned({"alg": "none", "typ": "JWT"}, claims), "RS256"),
        (_unsigned({"alg": "HS256", "typ": "JWT"}, claims, vonage_keys[1].encode()), "RS256"),  # key confusion
        (JwtClient("ffffffff-bbbb-4ccc-8ddd-0123456789ab", vonage_keys[0]).generate_application_jwt(), "application"),
        (  # a JWT good for thirty years is a key that never expires
            JwtClient(VONAGE_APP, vonage_keys[0]).generate_application_jwt({"exp": now + 30 * 365 * 86400}),
            "lifetime",
        ),
    ]
    url = f"{api.url}/v1/recordings/{done['id']}.wav"
    for jwt, words in cases:
        token = jwt.decode() if isinstance(jwt, bytes) else jwt
        refused = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert refused.status_code == 401, (words, refused.text)
        message = refused.json()["message"]
        assert "Vonage JWT" in message and words in message, message
    audit = [a["action"] for a in api.box.catalog.query("SELECT action FROM audit")]
    assert audit.count("failed_login") == len(cases) == 6
    good = JwtClient(VONAGE_APP, vonage_keys[0]).generate_application_jwt().decode()
    still = requests.get(url, headers={"Authorization": f"Bearer {good}"}, timeout=5)
    assert still.status_code == 200  # a signed JWT cannot be guessed: the block stops the guesser only
    guess = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert guess.status_code == 429  # failed_logins = 6: the address may not guess on


def test_the_vonage_keys_are_checked_when_the_config_loads(tmp_path, vonage_keys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private, public = vonage_keys
    base = {"listen": "127.0.0.1:8080", "tokens": TOKEN, "vonage_application_id": VONAGE_APP}
    inline = cfg.parse({"http": {**base, "vonage_public_key": public}})
    assert inline.http["vonage_public_key"].strip() == public.strip()
    key_file = tmp_path / "app.pub"
    key_file.write_text(public)
    assert (
        cfg.parse({"http": {**base, "vonage_public_key": str(key_file)}}).http["vonage_public_key"]
        == inline.http["vonage_public_key"]
    )
    ec_public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for value, words in (
        ("not a key", "no such file"),
        (str(tmp_path / "missing.pem"), "no such file"),
        ("-----BEGIN PUBLIC KEY-----\nbm9wZQ==\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
        (private, "private key"),
        (ec_public, "RSA"),
        (rsa_key_pair(1024)[1], "2048"),
    ):
        with pytest.raises(cfg.ConfigError, match="vonage_public_key") as bad:
            cfg.parse({"http": {**base, "vonage_public_key": value}})
        assert words.lower() in str(bad.value).lower(), str(bad.value)
        assert "MII" not in str(bad.value), "no key material in the error line"
    body = private.splitlines()[1]
    for key in ("vonage_public_key", "vonage_private_key"):  # pasted in the wrong place, or under a wrong name
        with pytest.raises(cfg.ConfigError) as pasted:
            cfg.parse({"http": {**base, key: private}})
        assert body not in str(pasted.value) and "(a private key, hidden)" in str(pasted.value)
    with pytest.raises(cfg.ConfigError, match="vonage_application_id") as alone:
        cfg.parse({"http": {"listen": "127.0.0.1:8080", "tokens": TOKEN, "vonage_public_key": public}})
    assert "vonage_public_key" in str(alone.value)
    with pytest.raises(cfg.ConfigError, match="vonage_application_id") as not_uuid:
        cfg.parse({"http": {**base, "vonage_application_id": "my-app"}})
    assert "UUID" in str(not_uuid.value)


def test_a_blocked_address_may_not_try_the_basic_password_even_when_it_is_right(tmp_path):
    """The Basic password is what a guesser could find: once an address is blocked it waits, right password
    or not; a token still goes through."""
    password = "correct-horse-battery-staple"
    box = Running(tmp_path, username="desk", password=password)
    try:
        for _ in range(5):
            assert (
                requests.get(box.url + "/v1/recordings", auth=("desk", "wrong-password"), timeout=5).status_code == 401
            )
        assert requests.get(box.url + "/v1/recordings", auth=("desk", password), timeout=5).status_code == 429
        assert box.get("/v1/recordings").status_code == 200
    finally:
        box.stop()
