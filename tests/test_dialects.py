"""Vendors' documents as start and stop commands: every vendor example, field by field (firmware.dialects).

The examples are copied as they appear in the vendors' documents that firmware/dialects.py names (only
where a document's Markdown escapes ``_`` as ``\\_`` is that undone, and said so).
"""

from __future__ import annotations

import json

import pytest

from firmware import config as cfg
from firmware.control import start_request
from firmware.core.options import CALLBACK_FORMATS, OptionError, RecordingOptions
from firmware.delivery.routes import Routes
from firmware.dialects import (
    DIALECTS,
    MAX_TWIML,
    DialectError,
    Translation,
    Unsupported,
    detect,
    translate,
)


def run(dialect: str, document) -> Translation:
    """Translate, and check what every translation promises: options the box accepts."""
    translation = translate(dialect, document)
    assert translation.dialect == dialect
    assert translation.action in ("start", "stop")
    RecordingOptions.from_mapping(translation.options)
    if translation.action == "stop":
        assert translation.target
    return translation


def fields_of(translation: Translation) -> list[str]:
    return [u.field for u in translation.unsupported]


def fails(dialect: str, document, field: str, *words: str) -> DialectError:
    with pytest.raises(DialectError) as caught:
        translate(dialect, document)
    error = caught.value
    assert (error.dialect, error.field) == (dialect, field), str(error)
    message = str(error)
    assert message.startswith(f"{dialect}: {field}: ")
    for word in words:
        assert word in message, message
    return error


# -- Twilio TwiML (Twilio's TwiML <Recording> reference) -----------------------------------------

SEED_004_START = "\n".join(
    [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<Response>",
        "    <Start>",
        '        <Recording channels="dual" recordingStatusCallback = ',
        '        "https://example.com/your-callback-url" />',
        "    </Start>",
        "    <Say>The recording has started.</Say>",
        "</Response>",
    ]
)

SEED_004_NAMED = """<Start>
    <Recording name="my_recording" />
</Start>"""

SEED_004_STOP = """<Stop>
   <Recording name="my_recording" />
</Stop>"""


#: Twilio's TwiML <Recording> reference, "Noun attributes": the default of every <Recording> attribute,
#: as native options.
TWIML_DEFAULTS = {
    "name": "",
    "status_callback": "",
    "status_callback_method": "POST",
    "status_callback_events": ["completed"],
    "trim": "trim-silence",
    "track": "both",
    "channels": "dual",
}


def test_twiml_seed_start_example_records_dual_with_a_callback_and_reports_say():
    t = run("twilio", SEED_004_START)
    assert t.action == "start" and t.target is None
    assert t.options == TWIML_DEFAULTS | {
        "channels": "dual",
        "status_callback": "https://example.com/your-callback-url",
        "status_callback_format": "twilio",
    }
    assert t.unsupported == (
        Unsupported(
            "Response/Say", "The recording has started.", "the box only records: it does not run TwiML's <Say> verb"
        ),
    )


def test_twiml_seed_named_start_sets_the_name():
    t = run("twilio", SEED_004_NAMED)
    assert (t.action, t.options, t.unsupported) == ("start", TWIML_DEFAULTS | {"name": "my_recording"}, ())


def test_twiml_seed_stop_by_name_targets_that_recording():
    t = run("twilio", SEED_004_STOP)
    assert (t.action, t.target, t.options, t.unsupported) == ("stop", "my_recording", {}, ())


def test_twiml_stop_without_a_name_stops_the_current_recording_and_reports_other_attributes():
    t = run("twilio", '<Response><Stop><Recording trim="do-not-trim"/></Stop></Response>')
    assert (t.action, t.target) == ("stop", "current")
    assert fields_of(t) == ["trim"]
    assert "keeps the settings it started with" in t.unsupported[0].reason


def test_twiml_every_recording_attribute_maps_to_its_option():
    t = run(
        "twilio",
        "<Response><Start><Recording name='desk-1' recordingStatusCallback='https://cc.example.com/rec'"
        " recordingStatusCallbackMethod='GET' recordingStatusCallbackEvent='in-progress completed absent'"
        " trim='trim-silence' track='inbound' channels='mono'/></Start></Response>",
    )
    assert t.options == {
        "name": "desk-1",
        "status_callback": "https://cc.example.com/rec",
        "status_callback_method": "GET",
        "status_callback_events": ["in-progress", "completed", "absent"],
        "trim": "trim-silence",
        "track": "inbound",
        "channels": "mono",
        "status_callback_format": "twilio",
    }
    assert t.unsupported == ()


def test_twiml_bare_recording_gets_seed_004_defaults_not_the_boxs():
    # The box's own defaults (RecordingOptions, or a config) are mono and do-not-trim; TwiML's are dual and
    # trim-silence.
    box = RecordingOptions.from_mapping({"channels": "mono", "trim": "do-not-trim", "status_callback_method": "GET"})
    t = run("twilio", '<Start><Recording name="x"/></Start>')
    assert (t.options, t.unsupported) == (TWIML_DEFAULTS | {"name": "x"}, ())
    started = RecordingOptions.from_mapping(t.options, box)
    assert (started.channels, started.trim, started.track) == ("dual", "trim-silence", "both")
    assert (started.status_callback, started.status_callback_method, started.status_callback_events) == (
        "",
        "POST",
        ("completed",),
    )
    assert run("twilio", "<Start><Recording/></Start>").options == TWIML_DEFAULTS


def test_twiml_bare_recording_sends_no_status_callback_as_in_seed_004():
    # recordingStatusCallback defaults to none: a callback URL configured for the box's own recordings is not used.
    box = RecordingOptions.from_mapping({"status_callback": "https://box-default.example.com/cb"})
    options = RecordingOptions.from_mapping(run("twilio", "<Start><Recording/></Start>").options, box)
    assert options.status_callback == ""


def test_twiml_rest_style_and_unknown_attributes_are_reported_with_the_right_name():
    t = run("twilio", '<Start><Recording recordingChannels="dual" recordingTrack="inbound" timeout="5"/></Start>')
    assert t.options == TWIML_DEFAULTS
    assert t.unsupported == (
        Unsupported("recordingChannels", "dual", "not an attribute of twilio's <Recording>; did you mean channels?"),
        Unsupported("recordingTrack", "inbound", "not an attribute of twilio's <Recording>; did you mean track?"),
        Unsupported("timeout", "5", "not an attribute of twilio's <Recording>; it has no effect"),
    )


def test_twiml_relative_callback_url_is_reported_not_guessed():
    t = run("twilio", '<Start><Recording recordingStatusCallback="/recording-events"/></Start>')
    assert t.options == TWIML_DEFAULTS  # no callback: not the box's configured one either
    assert fields_of(t) == ["recordingStatusCallback"]
    assert "absolute https:// URL" in t.unsupported[0].reason
    assert "no status callback" in t.unsupported[0].reason


def test_twiml_second_recording_and_other_start_nouns_are_reported():
    t = run(
        "twilio",
        '<Response><Start><Stream url="wss://x.example/s"/><Recording name="a"/></Start>'
        '<Start><Recording name="b"/></Start><Record maxLength="20"/></Response>',
    )
    assert (t.action, t.options) == ("start", TWIML_DEFAULTS | {"name": "a"})
    assert fields_of(t) == ["Response/Start[1]/Stream", "Response/Record", "Response/Start[2]/Recording"]
    assert t.unsupported[2].value == {"name": "b"}
    assert t.unsupported[2].reason.startswith("one recording per command")


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        ('<Start><Recording channels="stereo"/></Start>', "channels", ["'stereo'", "mono, dual"]),
        ('<Start><Recording track="caller"/></Start>', "track", ["inbound, outbound, both"]),
        ('<Start><Recording trim="yes"/></Start>', "trim", ["trim-silence, do-not-trim"]),
        (
            '<Start><Recording recordingStatusCallbackMethod="PUT"/></Start>',
            "recordingStatusCallbackMethod",
            ["POST or GET"],
        ),
        (
            '<Start><Recording recordingStatusCallbackEvent="started"/></Start>',
            "recordingStatusCallbackEvent",
            ["'started'"],
        ),
        (
            '<Start><Recording recordingStatusCallback="ftp://x.example/"/></Start>',
            "recordingStatusCallback",
            ["http://"],
        ),
        (f'<Start><Recording name="{"n" * 129}"/></Start>', "name", ["128"]),
        ("<Start><Recording>", "document", ["not well-formed XML"]),
        ("recording please", "document", ["not well-formed XML"]),
        ("<Hangup/>", "document", ["<Hangup> is not TwiML's"]),
        ("<Response><Say>hello</Say></Response>", "document", ["has no <Start><Recording>"]),
        ('<Start><Recording name="&boss;"/></Start>', "document", ["undefined entity"]),
        (
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            '<Start><Recording name="&b;"/></Start>',
            "document",
            ["<!DOCTYPE", "no entity is expanded"],
        ),
        ('<!ENTITY x SYSTEM "file:///etc/passwd"><Start><Recording/></Start>', "document", ["<!ENTITY"]),
        ({"Start": {"Recording": {}}}, "document", ["is an object", "TwiML text"]),
        (b"\xff<Start/>", "document", ["UTF-8"]),
    ],
)
def test_twiml_malformed_documents_are_refused_naming_the_field(document, field, words):
    fails("twilio", document, field, *words)


def test_twiml_oversized_documents_are_refused_before_parsing():
    big = "<Start><Recording/></Start>" + " " * MAX_TWIML
    fails("twilio", big, "document", f"at most {MAX_TWIML}")


def test_twiml_as_bytes_is_read_as_utf8():
    assert run("twilio", SEED_004_NAMED.encode()).options == TWIML_DEFAULTS | {"name": "my_recording"}


# -- SignalWire SWML (SignalWire's SWML record reference) ----------------------------------------

SEED_001_JSON = """{
"version": "1.0.0",
"sections": {
"main": [
{
"play": {
"url": "say:Start speaking after the beep. Press hash to end recording."
}
},
{
"record": {
"end_silence_timeout": 3,
"beep": true
}
},
{
"play": {
"url": "say:Recording ${record_result}. Playing back recording:"
}
},
{
"play": {
"url": "${record_url}"
}
}
]
}
}"""

SEED_001_YAML = """version: 1.0.0
sections:
main:
- play:
url: 'say:Start speaking after the beep. Press hash to end recording.'
- record:
end_silence_timeout: 3
beep: true
- play:
url: 'say:Recording ${record_result}. Playing back recording:'
- play:
url: '${record_url}'"""

SEED_001_STATUS_CALLBACK = """{
"event_type": "calling.call.record",
"event_channel": "swml:xxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
"timestamp": 1640000000.123,
"project_id": "xxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
"space_id": "xxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
"params": {
"state": "finished",
"control_id": "xxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
"call_id": "xxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
"node_id": "xxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
"url": "https://your-space.signalwire.com/api/v1/recordings/rec-uuid/download",
"duration": 15,
"size": 248320,
"recording_id": "xxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
"start_time": 1640000000.123,
"end_time": 1640000015.623,
"record": {
"audio": {
"format": "wav",
"direction": "speak",
"stereo": false
}
}
}
}"""


def test_swml_seed_json_example_is_a_voicemail_that_ends_on_silence_or_hash():
    t = run("signalwire", json.loads(SEED_001_JSON))
    assert t.action == "start"
    assert t.options == {"end_on_silence": 3.0, "beep": True, "end_on_key": "#"}
    assert RecordingOptions.from_mapping(t.options).synchronous
    assert fields_of(t) == ["sections.main[0]", "sections.main[2]", "sections.main[3]"]
    assert t.unsupported[0] == Unsupported(
        "sections.main[0]",
        {"play": {"url": "say:Start speaking after the beep. Press hash to end recording."}},
        "the box only records: it does not run SWML's play method",
    )


def test_swml_seed_yaml_example_is_refused_asking_for_json():
    fails("signalwire", SEED_001_YAML, "document", "YAML", "JSON form")


def test_swml_seed_status_callback_is_not_a_command():
    fails("signalwire", json.loads(SEED_001_STATUS_CALLBACK), "document", "event_type", "record")


def test_swml_record_every_parameter_maps_to_its_option():
    t = run(
        "signalwire",
        {
            "record": {
                "stereo": True,
                "format": "wav",
                "direction": "speak",
                "terminators": "#*",
                "beep": False,
                "input_sensitivity": 60.5,
                "initial_timeout": 4,
                "end_silence_timeout": 5.0,
                "max_length": 120,
                "status_url": "https://cc.example.com/swml",
            }
        },
    )
    assert t.options == {
        "channels": "dual",
        "format": "wav",
        "track": "inbound",
        "end_on_key": "#*",
        "beep": False,
        "input_sensitivity": 60.5,
        "initial_timeout": 4.0,
        "end_on_silence": 5.0,
        "max_length": 120.0,
        "status_callback": "https://cc.example.com/swml",
        "status_callback_events": ["in-progress", "completed", "absent"],
        "status_callback_format": "signalwire",
    }
    assert t.unsupported == ()


def test_swml_record_without_format_keeps_the_boxs_because_seed_001_states_no_default():
    # The SWML record reference's "Properties" gives no defaults (its status callback example shows "wav" as
    # one value, not a default), so the box's own apply: left out of the options, for [recording] or
    # RecordingOptions to fill in.
    t = run("signalwire", {"record": {}})
    assert t.options == {"end_on_key": "#"}  # the one default the reference shows: its example's "Press hash"
    assert RecordingOptions.from_mapping(t.options, RecordingOptions.from_mapping({"format": "wav"})).format == "wav"
    assert RecordingOptions.from_mapping(t.options).format == "mp3"
    assert run("signalwire", {"record_call": {}}).options == {}


def test_swml_record_call_is_a_background_recording_named_by_its_control_id():
    t = run("signalwire", {"record_call": {"control_id": "monitor", "direction": "listen", "stereo": False}})
    assert t.options == {"name": "monitor", "track": "outbound", "channels": "mono"}
    assert not RecordingOptions.from_mapping(t.options).synchronous
    assert run("signalwire", {"record_call": {"direction": "both"}}).options == {"track": "both"}


def test_swml_record_with_empty_terminators_has_no_end_key():
    t = run("signalwire", {"record": {"terminators": ""}})
    assert t.options == {"end_on_key": ""}


def test_swml_stop_record_call_stops_by_control_id_or_the_current_one():
    t = run("signalwire", {"stop_record_call": {"control_id": "monitor"}})
    assert (t.action, t.target, t.options) == ("stop", "monitor", {})
    assert run("signalwire", {"stop_record_call": {}}).target == "current"
    assert run("signalwire", {"stop_record_call": None}).target == "current"
    in_a_document = {"version": "1.0.0", "sections": {"main": ["stop_record_call"]}}
    assert (run("signalwire", in_a_document).action, run("signalwire", in_a_document).target) == ("stop", "current")


def test_swml_mp4_and_unknown_parameters_are_reported():
    t = run("signalwire", {"record": {"format": "mp4", "control_id": "x", "transcribe": True}})
    assert t.options == {"end_on_key": "#"}
    assert t.unsupported == (
        Unsupported(
            "format",
            "mp4",
            "the box writes wav or mp3 only; it records in its configured format instead (mp3 unless set)",
        ),
        Unsupported("control_id", "x", "not a field of signalwire's record; it has no effect"),
        Unsupported("transcribe", True, "not a field of signalwire's record; it has no effect"),
    )


def test_swml_document_reads_main_only_and_one_recording():
    t = run(
        "signalwire",
        {
            "version": "1.0.0",
            "sections": {
                "main": ["answer", {"record_call": {"format": "mp3"}}, {"record": {}}],
                "voicemail": [{"record": {}}],
            },
        },
    )
    assert t.options == {"format": "mp3"}
    assert fields_of(t) == ["sections.voicemail", "sections.main[0]", "sections.main[2]"]
    assert "only the main section" in t.unsupported[0].reason
    assert t.unsupported[2].reason.startswith("one recording per command")


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        ({"record": {"stereo": "yes"}}, "stereo", ["'yes' is not a boolean", "true or false"]),
        ({"record": {"format": "flac"}}, "format", ["wav, mp3, mp4"]),
        ({"record": {"direction": "in"}}, "direction", ["speak, listen, both"]),
        ({"record": {"terminators": 5}}, "terminators", ["not text"]),
        ({"record": {"terminators": "#x"}}, "terminators", ["DTMF keys"]),
        ({"record": {"end_silence_timeout": "3"}}, "end_silence_timeout", ["not a number"]),
        ({"record": {"input_sensitivity": 101}}, "input_sensitivity", ["from 0 to 100"]),
        ({"record": {"max_length": 0}}, "max_length", ["more than 0"]),
        ({"record": {"status_url": "swml-events"}}, "status_url", ["http:// or https:// URL"]),
        ({"record": ["stereo"]}, "record", ["is a list"]),
        ({"record": {}, "play": {}}, "document", ["one of record, record_call, stop_record_call"]),
        ({"play": {"url": "x"}}, "document", ["record"]),
        ({"version": "1.0.0", "sections": {"main": {"record": {}}}}, "sections.main", ["a main section"]),
        ({"version": "1.0.0", "sections": {"main": [{"play": {}}]}}, "sections.main", ["has no record"]),
        ({"version": "1.0.0", "sections": {"main": [["record"]]}}, "sections.main[0]", ["not an SWML instruction"]),
        ([{"record": {}}], "document", ["is a list"]),
    ],
)
def test_swml_malformed_documents_are_refused_naming_the_field(document, field, words):
    fails("signalwire", document, field, *words)


# -- Sinch (Sinch's Voice guide "Recording calls") ------------------------------------------------

# "Recording instructions", the format lines: [RecordingOptions] there is the type's name.
SEED_002_START_FORMAT = {"name": "StartRecording", "options": [RecordingOptions]}
SEED_002_STOP_FORMAT = {"name": "StopRecording"}
# The SVAML example, its placeholders included: in Python, [...] and {...} hold Ellipsis.
SEED_002_SVAML = {
    "instructions": [
        {"name": "Say", "text": "Hello world, I don't want you to record this part", "locale": "en-US"},
        {"name": "StartRecording", "options": [...]},
        {"name": "Say", "text": "Hello world, this part will be recorded", "locale": "en-US"},
    ],
    "action": {...},
}
# The ACE example; the guide is Markdown, where "\_" is an escaped "_".
SEED_002_ACE = r"""{
        "action": {
            "name": "Continue",
            "recording": true,
            "recordingOptions": {
                "destinationUrl": "s3://my-s3-bucket",
                "credentials": "xyz\_access\_key:wrt\_secret\_key:eu-central-1",
                "format": "mp3",
                "notificationEvents": true
            }
        }
    }"""
SEED_002_S3 = {
    "recordingOptions": {
        "destinationUrl": "s3://sinch-storage/voice-recordings/my-recording.mp3",
        "credentials": "AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY:eu-central-1",
        "notificationEvents": True,
    }
}
SEED_002_SDRIVE = {"recordingOptions": {"destinationUrl": "sdrive://my-recording.mp3", "notificationEvents": True}}
SEED_002_NOTIFY = {
    "event": "notify",
    "callid": "01234567-89ab-cdef-fedc-ba9876543210",
    "version": 1,
    "type": "recording_finished",  # "recording\\_finished" in the guide's Markdown
}

CREDENTIALS_REASON = (
    "the box never takes storage credentials in a command: it uses [upload] s3_access_key, "
    "s3_secret_key and s3_region from its config"
)
NOTIFY_REASON = (
    "Sinch sends recording_finished and recording_available to the application's callback URL, which a "
    "document does not carry: the box sends them in Sinch's form to its own [recording] status_callback, "
    "and to none when that is empty"
)
#: Sinch's guide, "Recording options": format "mp3" and notificationEvents true (Sinch's notify events) by
#: default.
SINCH_DEFAULTS = {"format": "mp3", "status_callback_events": ["completed"], "status_callback_format": "sinch"}


def test_sinch_seed_stop_instruction_stops_the_current_recording():
    t = run("sinch", SEED_002_STOP_FORMAT)
    assert (t.action, t.target, t.options, t.unsupported) == ("stop", "current", {}, ())


def test_sinch_seed_start_format_line_is_a_template_not_options():
    fails("sinch", SEED_002_START_FORMAT, "options", "not recording options", "destinationUrl")


def test_sinch_seed_svaml_example_with_its_placeholders_is_refused_naming_them():
    fails("sinch", SEED_002_SVAML, "instructions[1].options", "is Ellipsis", "destinationUrl")


def test_sinch_seed_svaml_example_filled_in_records_from_the_instruction_and_reports_say():
    say, start, say_again = SEED_002_SVAML["instructions"]
    filled = {**start, "options": {"destinationUrl": "s3://my-s3-bucket", "format": "wav"}}
    document = {"instructions": [say, filled, say_again], "action": {"name": "Continue"}}
    t = run("sinch", document)
    assert t.options == SINCH_DEFAULTS | {"destination": "s3://my-s3-bucket", "format": "wav"}
    assert fields_of(t) == ["instructions[0]", "instructions[2]", "action", "notificationEvents"]
    assert t.unsupported[0].reason == "the box only records: it does not run Sinch's Say instruction"
    assert "does not control the call" in t.unsupported[2].reason


def test_sinch_seed_ace_response_records_to_s3_and_reports_credentials_and_the_action():
    t = run("sinch", json.loads(SEED_002_ACE.replace("\\_", "_")))
    assert t.action == "start"
    assert t.options == SINCH_DEFAULTS | {"destination": "s3://my-s3-bucket"}
    assert t.unsupported == (
        Unsupported(
            "action.name",
            "Continue",
            "the box only records: it does not control the call, so of Sinch's action only recording and "
            "recordingOptions are used",
        ),
        Unsupported("credentials", "xyz_access_key:***:eu-central-1", CREDENTIALS_REASON),
        Unsupported("notificationEvents", True, NOTIFY_REASON),
    )


def test_sinch_seed_s3_example_keeps_the_file_name_and_never_echoes_the_secret_key():
    t = run("sinch", SEED_002_S3)
    assert t.options == SINCH_DEFAULTS | {"destination": "s3://sinch-storage/voice-recordings/my-recording.mp3"}
    assert t.unsupported == (
        Unsupported("credentials", "AKIAIOSFODNN7EXAMPLE:***:eu-central-1", CREDENTIALS_REASON),
        Unsupported("notificationEvents", True, NOTIFY_REASON),
    )
    assert "wJalrXUtnFEMI" not in repr(t)


def test_sinch_seed_sdrive_example_is_reported_and_the_configured_destination_used():
    t = run("sinch", SEED_002_SDRIVE)
    assert t.options == SINCH_DEFAULTS
    assert fields_of(t) == ["destinationUrl", "notificationEvents"]
    assert t.unsupported[0].reason.startswith("Sinch Drive is Sinch's own storage")
    assert "configured [upload] destination" in t.unsupported[0].reason


def test_sinch_seed_notification_is_not_a_command():
    fails("sinch", SEED_002_NOTIFY, "document", "has no StartRecording")


def test_sinch_start_instruction_maps_its_options():
    t = run(
        "sinch",
        {"name": "startRecording", "options": {"destinationUrl": "https://files.example.com/up/", "format": "WAV"}},
    )
    assert t.options == SINCH_DEFAULTS | {"destination": "https://files.example.com/up/", "format": "wav"}


def test_sinch_left_out_format_and_notification_events_get_seed_002_defaults():
    t = run("sinch", {"recordingOptions": {"destinationUrl": "s3://calls/"}})
    assert t.options == {
        "destination": "s3://calls/",
        "format": "mp3",
        "status_callback_events": ["completed"],
        "status_callback_format": "sinch",
    }
    assert t.unsupported == (Unsupported("notificationEvents", True, NOTIFY_REASON),)
    box = RecordingOptions.from_mapping({"format": "wav"})
    assert RecordingOptions.from_mapping(t.options, box).format == "mp3"


def test_sinch_notification_events_false_sends_no_status_callback():
    t = run("sinch", {"recordingOptions": {"notificationEvents": False}})
    assert (t.options, t.unsupported) == ({"status_callback": "", "format": "mp3"}, ())


def test_sinch_unknown_fields_and_second_recordings_are_reported():
    t = run(
        "sinch",
        {
            "instructions": [{"name": "StartRecording", "options": {"format": "mp3", "bitrate": 64}}],
            "action": {"name": "Continue", "recording": True, "recordingOptions": {}},
            "custom": "x",
        },
    )
    assert t.options == SINCH_DEFAULTS
    assert fields_of(t) == ["action.name", "custom", "action", "bitrate", "notificationEvents"]
    assert t.unsupported[3].reason == "not a field of sinch's recordingOptions; it has no effect"
    stop = run("sinch", {"name": "StopRecording", "options": {"format": "mp3"}})
    assert (stop.action, fields_of(stop)) == ("stop", ["options"])


def test_sinch_other_destination_schemes_are_reported():
    t = run("sinch", {"recordingOptions": {"destinationUrl": "ftp://files.example.com/"}})
    assert t.options == SINCH_DEFAULTS and fields_of(t) == ["destinationUrl", "notificationEvents"]


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        ({"recordingOptions": {"format": "ogg"}}, "format", ["mp3, wav"]),
        ({"recordingOptions": {"notificationEvents": "true"}}, "notificationEvents", ["true or false"]),
        ({"recordingOptions": {"destinationUrl": 7}}, "destinationUrl", ["not text"]),
        ({"recordingOptions": {"credentials": ["k", "s"]}}, "credentials", ["AccessKey:SecretKey:Region"]),
        ({"recordingOptions": "s3://bucket"}, "recordingOptions", ["not recording options"]),
        ({"action": {"name": "Continue", "recording": "yes"}}, "action.recording", ["true or false"]),
        ({"action": {"name": "Continue"}}, "document", ["has no StartRecording"]),
        ({"action": ["Continue"]}, "action", ["is a list"]),
        ({"instructions": {"name": "StartRecording"}}, "instructions", ["a list of instruction objects"]),
        ({"instructions": ["StartRecording"]}, "instructions[0]", ["is text"]),
        ({"name": "Say", "text": "hi"}, "name", ["StartRecording or StopRecording"]),
        ({"name": 3}, "name", ["not text"]),
        ([{"name": "StartRecording"}], "document", ["is a list"]),
    ],
)
def test_sinch_malformed_documents_are_refused_naming_the_field(document, field, words):
    fails("sinch", document, field, *words)


def test_sinch_credentials_of_another_shape_are_masked_entirely():
    t = run("sinch", {"recordingOptions": {"credentials": "token-without-colons"}})
    assert t.unsupported[0].value == "***"


def test_sinch_secret_keys_are_never_reported_back_even_in_a_second_recording_or_an_error():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    options = {"destinationUrl": "s3://b", "credentials": f"AKIAIOSFODNN7EXAMPLE:{secret}:eu-central-1"}
    t = run(
        "sinch",
        {"instructions": [{"name": "StopRecording"}], "action": {"recording": True, "recordingOptions": options}},
    )
    assert t.action == "stop"
    assert t.unsupported[0].field == "action"
    assert t.unsupported[0].value["recordingOptions"]["credentials"] == "AKIAIOSFODNN7EXAMPLE:***:eu-central-1"
    assert secret not in repr(t)
    error = fails("sinch", {"recordingOptions": f"AKIA:{secret}:eu-central-1"}, "recordingOptions", "is text")
    assert secret not in str(error)


# -- Vonage NCCO record (Vonage's Voice API recording guide) -------------------------------------

#: Vonage's recording guide: "the default is MP3" ("File formats"), mono unless split ("Overview").
VONAGE_DEFAULTS = {"format": "mp3", "channels": "mono"}


def test_vonage_record_left_out_format_and_split_get_seed_000_defaults():
    t = run("vonage", {"action": "record"})
    assert (t.options, t.unsupported) == (VONAGE_DEFAULTS, ())
    box = RecordingOptions.from_mapping({"format": "wav", "max_length": 600, "end_on_silence": 2})
    started = RecordingOptions.from_mapping(t.options, box)
    assert (started.format, started.channels) == ("mp3", "mono")
    # Vonage's guide gives no value for timeout, endOnSilence, endOnKey or beepStart: the box's own stay
    assert (started.max_length, started.end_on_silence, started.end_on_key, started.beep) == (600.0, 2.0, "", False)


def test_vonage_ogg_is_reported_and_recorded_in_the_boxs_format_not_vonages_default():
    t = run("vonage", {"action": "record", "format": "ogg"})
    assert t.options == {"channels": "mono"} and fields_of(t) == ["format"]


def test_vonage_voicemail_record_ends_on_silence_or_key_and_is_synchronous():
    t = run("vonage", {"action": "record", "endOnSilence": 3, "endOnKey": "#", "beepStart": True})
    assert t.options == VONAGE_DEFAULTS | {"end_on_silence": 3.0, "end_on_key": "#", "beep": True}
    assert RecordingOptions.from_mapping(t.options).synchronous


def test_vonage_monitor_record_is_asynchronous_with_its_timeout_as_max_length():
    for key in ("timeOut", "timeout"):  # the NCCO reference's spelling, and the guide's
        t = run("vonage", [{"action": "record", key: 3600}])
        assert t.options == VONAGE_DEFAULTS | {"max_length": 3600.0}
        assert not RecordingOptions.from_mapping(t.options).synchronous


def test_vonage_split_conversation_is_a_dual_channel_recording():
    def channels(**fields) -> str:
        return run("vonage", {"action": "record", "split": "conversation", **fields}).options["channels"]

    assert (channels(), channels(channels=2), channels(channels=1)) == ("dual", "dual", "mono")


def test_vonage_more_than_two_channels_is_reported_and_recorded_as_two():
    t = run("vonage", {"action": "record", "split": "conversation", "channels": 4})
    assert t.options == VONAGE_DEFAULTS | {"channels": "dual"}
    assert fields_of(t) == ["channels"]
    assert "left inbound" in t.unsupported[0].reason


def test_vonage_channels_without_split_has_no_effect_and_says_so():
    t = run("vonage", {"action": "record", "channels": 2})
    assert t.options == VONAGE_DEFAULTS
    assert t.unsupported == (
        Unsupported(
            "channels", 2, 'Vonage uses channels only with split: "conversation"; without it there is no effect'
        ),
    )


def test_vonage_event_url_becomes_the_status_callback_for_every_end():
    t = run(
        "vonage",
        {"action": "record", "eventUrl": ["https://cc.example.com/recordings"], "eventMethod": "get", "format": "wav"},
    )
    assert t.options == {
        "status_callback": "https://cc.example.com/recordings",
        "status_callback_events": ["completed", "absent"],
        "status_callback_format": "vonage",
        "status_callback_method": "GET",
        "format": "wav",
        "channels": "mono",
    }


def test_vonage_ogg_transcription_and_unknown_fields_are_reported():
    transcription = {"language": "en-US", "eventUrl": ["https://cc.example.com/t"]}
    t = run("vonage", {"action": "record", "format": "ogg", "transcription": transcription, "beepOnEnd": True})
    assert t.options == {"channels": "mono"}
    assert t.unsupported == (
        Unsupported(
            "format",
            "ogg",
            "the box writes wav or mp3 only; it records in its configured format instead (mp3 unless set)",
        ),
        Unsupported(
            "transcription",
            transcription,
            "the box does not transcribe; transcribe the uploaded file (channels dual keeps the parties apart)",
        ),
        Unsupported("beepOnEnd", True, "not a field of vonage's record action; it has no effect"),
    )


def test_vonage_ncco_list_uses_its_record_action_and_reports_the_rest():
    ncco = [
        {"action": "talk", "text": "This call may be recorded"},
        {"action": "record", "split": "conversation"},
        {"action": "conversation", "name": "room", "record": True},
        {"action": "record", "format": "wav"},
        {"action": "connect", "endpoint": [{"type": "phone", "number": "447700900000"}]},
    ]
    t = run("vonage", ncco)
    assert t.options == {"format": "mp3", "channels": "dual"}
    assert fields_of(t) == ["ncco[0]", "ncco[2]", "ncco[4]", "ncco[3]"]
    assert t.unsupported[0].reason == "the box only records: it does not run the NCCO's 'talk' action"
    assert "named conversation" in t.unsupported[1].reason
    assert t.unsupported[3].reason.startswith("one recording per command")


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        ({"action": "record", "format": "aac"}, "format", ["mp3, wav, ogg"]),
        ({"action": "record", "split": "stereo"}, "split", ["conversation"]),
        ({"action": "record", "channels": 33}, "channels", ["1 to 32"]),
        ({"action": "record", "channels": "2"}, "channels", ["1 to 32"]),
        ({"action": "record", "endOnSilence": "3"}, "endOnSilence", ["not a number"]),
        ({"action": "record", "endOnSilence": True}, "endOnSilence", ["not a number"]),
        ({"action": "record", "endOnKey": 1}, "endOnKey", ["not text"]),
        ({"action": "record", "endOnKey": "x"}, "endOnKey", ["DTMF keys"]),
        ({"action": "record", "timeOut": 0}, "timeOut", ["more than 0"]),
        ({"action": "record", "timeOut": 30, "timeout": 30}, "timeout", ["given twice"]),
        ({"action": "record", "beepStart": "true"}, "beepStart", ["true or false"]),
        ({"action": "record", "eventUrl": []}, "eventUrl", ["one URL"]),
        ({"action": "record", "eventUrl": ["https://a.example/", "https://b.example/"]}, "eventUrl", ["one URL"]),
        ({"action": "record", "eventUrl": ["recordings"]}, "eventUrl", ["http:// or https:// URL"]),
        ({"action": "record", "eventMethod": "PUT"}, "eventMethod", ["POST or GET"]),
        ({"action": "talk", "text": "hi"}, "action", ["'talk' is not a record action"]),
        ({"format": "wav"}, "action", ["None is not a record action"]),
        ([{"action": "talk", "text": "hi"}], "ncco", ["has no record action"]),
        (["record"], "ncco[0]", ["is text"]),
        ("record", "ncco", ["is text"]),
    ],
)
def test_vonage_malformed_documents_are_refused_naming_the_field(document, field, words):
    fails("vonage", document, field, *words)


# -- every dialect ------------------------------------------------------------------------------


def test_an_unknown_dialect_is_refused_with_the_known_ones():
    with pytest.raises(DialectError, match="expected one of vonage, signalwire, twilio, sinch"):
        translate("plivo", {})
    assert DIALECTS == ("vonage", "signalwire", "twilio", "sinch")


def test_dialect_errors_are_value_errors_so_front_ends_reply_with_them():
    assert issubclass(DialectError, ValueError)


def test_long_values_are_shortened_in_messages():
    error = fails("vonage", {"action": "record", "endOnKey": "x" * 500}, "endOnKey")
    assert len(str(error)) < 200


# -- detect -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ({"op": "start", "ncco": [{"action": "record"}]}, ("vonage", [{"action": "record"}])),
        ({"op": "start", "ncco": {"action": "record"}}, ("vonage", {"action": "record"})),
        ({"swml": {"record": {}}}, ("signalwire", {"record": {}})),
        ({"op": "start", "twiml": SEED_004_START}, ("twilio", SEED_004_START)),
        ({"op": "stop", "sinch": {"name": "StopRecording"}}, ("sinch", {"name": "StopRecording"})),
    ],
)
def test_detect_finds_each_wrapper(command, expected):
    assert detect(command) == expected


@pytest.mark.parametrize(
    "command",
    [
        {},
        {"op": "start"},
        {"op": "start", "options": {"name": "desk", "format": "wav"}},
        {"name": "desk", "beep": True},
    ],
)
def test_detect_leaves_native_commands_alone(command):
    assert detect(command) is None


def test_detect_refuses_two_documents_or_a_document_with_native_options():
    with pytest.raises(DialectError, match="carries ncco and twiml"):
        detect({"ncco": [], "twiml": "<Start/>"})
    with pytest.raises(DialectError, match="twilio: name: native options beside a twiml document"):
        detect({"twiml": SEED_004_NAMED, "name": "other"})
    with pytest.raises(DialectError, match="sinch: options: "):
        detect({"sinch": SEED_002_STOP_FORMAT, "options": {}})


def test_detect_and_translate_give_what_the_control_api_needs():
    assert start_request({"twiml": SEED_004_STOP}) == ("stop", {}, "my_recording", [], frozenset())
    action, options, target, unsupported, defaulted = start_request({"ncco": [{"action": "record", "format": "ogg"}]})
    assert (action, options, target, defaulted) == ("start", {"channels": "mono"}, None, {"channels"})
    assert unsupported == [{"field": "format", "value": "ogg", "reason": unsupported[0]["reason"]}]


# -- a document's status callback: to its URL, in its vendor's format -----------------------------

RECORDING_ID = "RE" + "1" * 32
DEVICE_HOOK = "https://central.example.com/device-hook"
BOX_HOOK = "https://central.example.com/box-recordings"


def queued_formats(translation: Translation, box_format: str = "native") -> dict[str, str]:
    """URL -> wire format of the status callbacks Routes queues when the recording a document started has
    finished, on a box with an [events] webhook and [recording] status_callback BOX_HOOK."""
    config = cfg.parse(
        {
            "events": {"webhook": DEVICE_HOOK, "callback_format": box_format, "webhook_events": "completed"},
            "recording": {"status_callback": BOX_HOOK},
        }
    )
    options = RecordingOptions.from_mapping(translation.options, config.recording)
    row = {"id": RECORDING_ID, "options": options.to_dict()}
    event = {"type": "recording.finished", "data": {"id": RECORDING_ID, "status": "completed"}}
    items = Routes(config, "box").callbacks(event, row)
    assert all(item.kind == "webhook" and item.recording_id == RECORDING_ID for item in items)
    return {item.target: item.payload["callback"]["format"] for item in items}


@pytest.mark.parametrize(
    ("dialect", "document", "url"),
    [
        ("vonage", {"action": "record", "eventUrl": ["https://cc.example.com/ncco"]}, "https://cc.example.com/ncco"),
        ("signalwire", {"record_call": {"status_url": "https://cc.example.com/swml"}}, "https://cc.example.com/swml"),
        ("twilio", SEED_004_START, "https://example.com/your-callback-url"),
    ],
)
@pytest.mark.parametrize("box_format", ["native", "sinch"])
def test_a_documents_callback_url_gets_its_vendors_format_and_the_device_webhook_the_boxs(
    dialect, document, url, box_format
):
    formats = queued_formats(run(dialect, document), box_format)
    assert formats == {url: dialect, DEVICE_HOOK: box_format}


def test_sinch_notification_events_go_to_the_boxs_status_callback_in_sinchs_format():
    t = run("sinch", {"recordingOptions": {"destinationUrl": "s3://calls/", "notificationEvents": True}})
    assert queued_formats(t, "twilio") == {BOX_HOOK: "sinch", DEVICE_HOOK: "twilio"}
    assert fields_of(t) == ["notificationEvents"]  # said: the document cannot name where they go
    off = run("sinch", {"recordingOptions": {"notificationEvents": False}})
    assert queued_formats(off, "twilio") == {DEVICE_HOOK: "twilio"}


def test_a_document_without_a_callback_url_leaves_the_boxs_callback_in_the_boxs_format():
    # Vonage's and SignalWire's documents give no default callback: the box's [recording] status_callback
    # stays, in the box's format, as it is not the document's URL. TwiML's default is none (Twilio's TwiML
    # <Recording> reference).
    assert queued_formats(run("vonage", {"action": "record"}), "twilio") == {BOX_HOOK: "twilio", DEVICE_HOOK: "twilio"}
    assert queued_formats(run("signalwire", {"record_call": {}}), "twilio") == {
        BOX_HOOK: "twilio",
        DEVICE_HOOK: "twilio",
    }
    assert queued_formats(run("twilio", SEED_004_NAMED), "sinch") == {DEVICE_HOOK: "sinch"}


def test_a_native_start_may_name_its_callbacks_format():
    config = cfg.parse({"events": {"callback_format": "native"}})
    options = RecordingOptions.from_mapping(
        {"status_callback": "https://cc.example.com/cb", "status_callback_format": "SignalWire"}
    )
    assert options.status_callback_format == "signalwire"
    row = {"id": RECORDING_ID, "options": options.to_dict()}
    event = {"type": "recording.finished", "data": {"id": RECORDING_ID, "status": "completed"}}
    [item] = Routes(config, "box").callbacks(event, row)
    assert item.payload["callback"]["format"] == "signalwire"
    # left out (or "", or a catalog row from before the option): [events] callback_format
    assert RecordingOptions().status_callback_format == ""
    for kept in ({**row["options"], "status_callback_format": ""}, {"status_callback": "https://cc.example.com/cb"}):
        [item] = Routes(config, "box").callbacks(event, {"id": RECORDING_ID, "options": kept})
        assert item.payload["callback"]["format"] == "native"


@pytest.mark.parametrize("value", ["cloudevents", "json", 7, None, ["twilio"]])
def test_a_bad_status_callback_format_is_refused_naming_the_option_and_the_formats(value):
    with pytest.raises(OptionError) as refused:
        RecordingOptions.from_mapping({"status_callback_format": value})
    assert refused.value.option == "status_callback_format"
    message = str(refused.value)
    assert message.startswith("status_callback_format: ")
    for name in ("native", "twilio", "signalwire", "sinch", "vonage", "[events] callback_format"):
        assert name in message, message


def test_each_dialect_names_a_callback_format_the_option_takes():
    assert set(DIALECTS) <= set(CALLBACK_FORMATS)
