"""
Where the text stages meet the rest: the call registry runs them once per
utterance, a config that forces redaction refuses the other outputs (4094 on
the direct API, 400-202 on start-streaming), the [redaction] section.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from mgateway.calls.registry import CallRegistry
from mgateway.calls.requests import StartRequest, TranscribeParams
from mgateway.calls.roles import channel_roles, media_line_roles, sender_roles, track_roles
from mgateway.ingress.direct.session import DirectSession, VocabularyPhrase
from mgateway.interfaces import IRecognizer
from mgateway.service import configured_entities
from mgateway.text.stage import TextStage
from tests.support.scripted_engine import ScriptedEngine
from tests.support.scripted_words import ScriptedWords
from tests.support.text import spoken
from tests.test_call_registry import GUID, Collect, code_of, run, start_body
from tests.test_config import APP, load, refusal

START = {"message": "startStream", "sender": {"role": "customer", "externalId": "JD232442"},
         "language": "en-US"}


def registry_with(text: TextStage):
    engine, sink = ScriptedEngine(), Collect()
    mappers = {"siprec": media_line_roles(), "twilio": track_roles, "genesysaudiohook": channel_roles,
               "direct": sender_roles}
    registry = CallRegistry(engine, {namespace: [sink] for namespace in mappers}, Clock(), mappers, text=text)
    return registry, engine, sink


def test_every_utterance_of_a_call_is_written_once_with_the_calls_context():
    registry, engine, sink = registry_with(TextStage())
    registry.attach("siprec", GUID, ["0", "1"]).audio("0", b"\0\0" * 160)
    run(registry.start(start_body()))
    media = registry.find("siprec", GUID)
    media.audio("0", b"\0\0" * 160)
    media.audio("1", b"\0\0" * 160)
    customer, agent = engine.transcribers
    agent.say(spoken("what's your pin"))
    customer.say(spoken("one two"))
    assert [e.utterance.text for e in sink.events] == ["What's your pin?", "##."]


def test_direct_calls_get_their_own_phrases_and_share_their_conversations_context():
    """Two sockets of one externalId: two one-leg calls, one conversation."""
    registry, engine, sink = registry_with(TextStage())
    phrases = []
    feeds = {
        "agent": registry.attach("direct", "stream-a", ["agent"], conversation_id="conv"),
        "customer": registry.attach("direct", "stream-c", ["customer"], conversation_id="conv",
                                    phrases=lambda: phrases),
    }
    for role, guid in (("agent", "stream-a"), ("customer", "stream-c")):
        run(registry.start(StartRequest("direct", guid, "X", "X", TranscribeParams("en-US"))))
        feeds[role].audio(role, b"\0\0" * 160)
    agent, customer = engine.transcribers
    agent.say(spoken("what's your pin"))
    customer.say(spoken("one two"))
    customer.say(spoken("i work at a c m e"))
    phrases.append(VocabularyPhrase("ACME", ("a c m e",), "company"))
    customer.say(spoken("i work at a c m e"))
    assert [(e.conversation_id, e.utterance.text) for e in sink.events] == [
        ("conv", "What's your pin?"), ("conv", "##."), ("conv", "I work at a c m e."),
        ("conv", "I work at ACME.")]


def test_start_streaming_with_unredacted_output_is_400_202_when_redaction_is_forced():
    registry, _, _ = registry_with(TextStage(force_redaction=True))
    registry.attach("siprec", GUID, ["0", "1"])
    for output in ("unredacted", "redacted_and_unredacted"):
        params = {"redactionOutput": output}
        assert code_of(registry.start(start_body(autotranscribeParams=params))) == "400-202"
    run(registry.start(start_body()))


@pytest.mark.parametrize("output, code", [
    ("redacted", "1000"), ("unredacted", "4094"), ("redacted_and_unredacted", "4094")])
def test_direct_start_with_unredacted_output_is_4094_when_redaction_is_forced(output, code):
    session = DirectSession("s", lambda tag: "en-US", force_redaction=True)
    session.receive_text(json.dumps({**START, "redactionOutput": output}))
    (message,) = [json.loads(frame) for frame in session.data_to_send()]
    assert message["status"]["code"] == code, message


def test_redaction_section_of_the_config(tmp_path):
    config = load(tmp_path, APP + '[redaction]\nalways = true\nenabled = ["EMAIL"]\ndisabled = ["PIN"]\n')
    assert config.redaction.always
    stage = TextStage(entities=lambda: configured_entities(config))
    context = stage.context("t", "c")
    params = type("P", (), {"language": "en-US", "smart_formatting": True, "redaction_output": "redacted"})
    assert stage.write(spoken("pin one two three four"), params, context).text == "Pin 1234."
    assert stage.write(spoken("mail bo at example dot com"), params, context).text == "Mail ## ## ####### ### ###."


@pytest.mark.parametrize("text, complaint", [
    ('[redaction]\ndisabled = ["CREDIT_CARD_NUMBER"]\n', "always redacted"),
    ('[redaction]\nenabled = ["SHOE_SIZE"]\n', "unknown entity"),
    ('[redaction]\nalways = "yes"\n', "true or false"),
])
def test_bad_redaction_sections_are_refused(tmp_path, text, complaint):
    assert complaint in refusal(tmp_path, APP + text)


def test_the_scripted_recogniser_is_a_recogniser():
    assert verifyObject(IRecognizer, ScriptedWords(["hello"]))
