"""TwiML is read with defusedxml: hostile XML (entity bombs, external entities, DTDs) and any text at all give a
``DialectError`` that names the problem, never another exception (firmware.dialects)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from firmware.dialects import MAX_TWIML, DialectError, Translation, translate

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n' for i in range(1, 10))
    + ']>\n<Start><Recording name="&lol9;"/></Start>'
)


@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Start><Recording name="&x;"/></Start>',
        '<!DOCTYPE Start SYSTEM "http://192.0.2.1/twiml.dtd"><Start><Recording/></Start>',
        "<!DOCTYPE Start><Start><Recording/></Start>",
    ],
    ids=["billion laughs", "external entity", "external DTD", "bare DTD"],
)
def test_a_document_with_a_dtd_is_refused_before_any_entity_is_expanded_or_file_fetched(document):
    with pytest.raises(DialectError) as refused:
        translate("twilio", document)
    assert refused.value.field == "document"
    assert "<!DOCTYPE" in str(refused.value) and "no entity is expanded" in str(refused.value)
    chained = refused.value.__cause__ or (None if refused.value.__suppress_context__ else refused.value.__context__)
    assert chained is None  # one clear line: the parser's exception is not chained to it


def test_a_markup_declaration_outside_a_dtd_is_named_where_the_xml_breaks():
    with pytest.raises(DialectError) as refused:
        translate("twilio", '<Start><Recording/></Start><!ENTITY x "y">')
    assert "not well-formed XML" in str(refused.value) and "at <!ENTITY" in str(refused.value)


def test_text_a_json_body_can_carry_but_utf8_cannot_is_refused():
    with pytest.raises(DialectError, match="not Unicode text"):
        translate("twilio", '<Start><Recording name="\ud800"/></Start>')


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example("<Start><Recording/></Start>")
@example("<Response>" + "<Start>" * 200 + "</Start>" * 200 + "</Response>")
@example("<a>" * (MAX_TWIML // 3) + "</a>" * 1)
@example("<?xml version='1.0' encoding='utf-16'?><Start/>")
@example('<Start><Recording name="a\x00"/></Start>')
@given(
    st.one_of(
        st.text(st.characters(exclude_categories=())),  # surrogates too: JSON text can hold them
        st.lists(
            st.sampled_from(
                [
                    "<Response>",
                    "</Response>",
                    "<Start>",
                    "</Start>",
                    "<Stop>",
                    "</Stop>",
                    "<Recording ",
                    "/>",
                    ">",
                    'name="x" ',
                    'channels="dual" ',
                    'track="both" ',
                    'recordingStatusCallback="https://example.com/cb" ',
                    'recordingStatusCallbackEvent="in-progress completed" ',
                    "<!DOCTYPE r>",
                    "<!ENTITY e 'x'>",
                    "&e;",
                    "&amp;",
                    "<![CDATA[x]]>",
                    "<?pi x?>",
                    "<!-- c -->",
                    "\x00",
                    "\ud800",
                ]
            )
            | st.text(max_size=5)
        ).map("".join),
        st.binary().map(bytes),
    )
)
def test_any_text_as_twiml_is_translated_or_refused_with_a_dialect_error(document):
    try:
        result = translate("twilio", document)
    except DialectError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("twilio: ")
    else:
        assert isinstance(result, Translation) and result.action in ("start", "stop")
