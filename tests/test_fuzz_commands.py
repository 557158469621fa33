"""Property-based tests of the MQTT command path: whatever JSON arrives, the answer names the problem.

Commands go to the real control API over the real loop, session, journal and catalog run inline
(``test_control.Inline``), so no thread or broker is needed; the broker side is tested in test_mqtt.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.delivery.mqtt import MAX_JSON_DEPTH, json_depth
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
    answer = Commands(box.control)(request)
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
