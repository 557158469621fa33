"""Property-based tests of the MQTT command path and the start options: whatever JSON arrives, the answer
names the problem, and no destination a command names gets credentials unless the config covers it.

Commands go to the real control API over the real loop, session, journal and catalog run inline
(``test_control.Inline``), so no thread or broker is needed; the broker side is tested in test_mqtt.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.core import OptionError, RecordingOptions
from firmware.delivery.mqtt import MAX_JSON_DEPTH, json_depth
from firmware.destinations import Destination, redact
from firmware.frontends.mqtt_commands import _FIELDS, OPS, Commands

from .test_control import Inline

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def commands(draw) -> dict:
    op = draw(st.sampled_from([*OPS, "explode", 7, None]))
    fields = sorted(_FIELDS.get(op, set()) | {"token", "request_id", "colour"}) if isinstance(op, str) else ["x"]
    body = draw(st.dictionaries(st.sampled_from(fields), JSON, max_size=4))
    return {"op": op, **body}


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    inline = Inline(tmp_path_factory.mktemp("fuzz"))
    yield inline
    inline.catalog.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=commands())
def test_every_command_gets_an_answer_that_names_the_problem(box, request):
    answer = Commands(box.control, auth="broker")(request)
    assert isinstance(answer["ok"], bool)
    if not answer["ok"]:
        assert answer["error"] and "internal error" not in answer["error"], answer
    json.dumps(answer, default=str)
    for rec in box.control.active():  # leave the box idle for the next example
        box.control.stop(rec["id"])


@given(value=JSON)
def test_json_depth_is_the_nesting_of_arrays_and_objects(value):
    def depth(v) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    text = json.dumps(value).encode()
    assert json_depth(text) == min(depth(value), MAX_JSON_DEPTH + 1)


# -- start options and destinations ---------------------------------------------------------------

URLISH = st.builds(
    "{}://{}{}{}{}".format,
    st.sampled_from(["https", "http", "s3", "HTTPS", "ftp", ""]),
    st.sampled_from(["", "user:pw@", "user@", ":@"]),
    st.sampled_from(
        ["central.example.com", "CENTRAL.example.com", "evil.example.com", "[::1]", "central.example.com."]
    ),
    st.sampled_from(["", ":443", ":8443", ":x", ":99999"]),
    st.text(alphabet="/calsx.%2eEfF?#=&", max_size=24),
)
OPTION_VALUES = JSON | URLISH | st.sampled_from(["default", "archive", "mqtt", "", "central"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.dictionaries(st.sampled_from([*RecordingOptions().to_dict(), "colour"]), OPTION_VALUES, max_size=5))
def test_any_start_options_start_a_recording_or_name_the_problem(box, options):
    try:
        row = box.control.start(options)
    except OptionError as exc:
        assert str(exc).startswith(f"{exc.option}: ") and exc.allowed
    else:
        target = box.destinations.resolve(row["options"]["destination"])
        assert target is None or target.destination.covers(target.url)
        box.control.stop(row["id"])


@settings(max_examples=500, deadline=None)
@given(url=URLISH)
def test_a_destination_covers_only_urls_on_its_own_server_inside_its_folder(url):
    central = Destination("default", "https://central.example.com/calls/")
    if central.covers(url):
        assert url.lower().startswith(("https://central.example.com/calls/", "https://central.example.com:443/calls/"))
        rest = url.split("/calls/", 1)[1]
        assert "@" not in url and "#" not in url and ".." not in rest and "%2e" not in rest.lower()


@given(url=URLISH, secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=16))
def test_redact_leaves_no_password_and_no_secret_parameter(url, secret):
    shown = redact(url.replace("user:pw@", f"user:{secret}@") + f"?access_token={secret}&sig={secret}")
    assert secret not in shown


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(["name", "status_callback", "destination", "end_on_key", "format"]),
    text=st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), min_size=1, max_size=4),
)
def test_a_lone_surrogate_in_a_start_option_is_refused_naming_the_option(box, key, text):
    value = "http://127.0.0.1/" + text if key == "status_callback" else text
    answer = Commands(box.control, auth="broker")({"op": "start", "options": {key: value}})
    if answer["ok"]:  # text without a surrogate may be a fine name
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
        box.control.stop(answer["recording"]["id"])
    else:
        assert answer["error"].startswith(f"{key}: ")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://[::1/in/?token=SECRET", "https://[::1/in/?***"),  # no URL: all after the path hidden
        ("https://h/in;token=SECRET/x", "https://h/in;token=***/x"),
        ("https://h/in/?pass=SECRET&jwt=SECRET&pw=SECRET&site=7", "https://h/in/?pass=***&jwt=***&pw=***&site=7"),
        ("s3://bucket/prefix/", "s3://bucket/prefix/"),
    ],
)
def test_redact_hides_secrets_wherever_a_url_carries_them(url, shown):
    assert redact(url) == shown


def test_an_s3_bucket_is_covered_only_as_written():
    archive = Destination("archive", "s3://archive/box-7/")
    assert archive.covers("s3://archive/box-7/2026/") and not archive.covers("s3://ARCHIVE/box-7/2026/")
