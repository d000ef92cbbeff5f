"""
The text stages end to end: the real gateway, a real direct WebSocket client,
a Twilio peer and sipp recording a SIPREC call, English words from a scripted recogniser (the packaged
Korean model cannot say them), transcripts on the socket, the HTTPS webhook
and the after-call endpoint.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from mgateway.ingress.siprec.srs import NAMESPACE
from tests.support.audio import chunks, pace, read_pcm
from tests.support.scripted_words import BYTES_PER_MS, ScriptedLanguage
from tests.support.siprec_peer import send_streams
from tests.test_direct_api import open_stream
from tests.test_siprec_api import sipp_recording
from tests.test_twilio_api import call_sid, started_stream

CUSTOMER = {"role": "customer", "externalId": "JD232442"}
AGENT = {"role": "agent", "externalId": "AG7"}
START = {"message": "startStream", "sender": CUSTOMER, "language": "en-US"}
#: Long enough for two scripted sentences of a second each.
AUDIO = read_pcm("customer.wav")[: 3 * 1000 * BYTES_PER_MS]


def scripted(monkeypatch, gateway, *scripts):
    return ScriptedLanguage(monkeypatch, gateway.service, list(scripts))


async def stream(gateway, start: dict, external_id: str, before_audio=()) -> tuple[list, dict, list]:
    """One direct session: (transcripts, finalResponse, other replies)."""
    client, factory = await open_stream(gateway, external_id)
    client.send_json(start)
    started = await client.next_message()
    assert started["status"]["code"] == "1000", started
    replies = []
    for message in before_audio:
        client.send_json(message)
        replies.append(await client.next_message())
    await pace(reactor, chunks(AUDIO), client.send_audio)
    client.send_json({"message": "finishStream"})
    transcripts = []
    while (message := await client.next_message())["message"] == "transcript":
        transcripts.append(message)
    await factory.closed
    return transcripts, message, replies


async def twilio_call(gateway, params: dict, inbound: bytes, outbound: bytes) -> tuple[str, dict]:
    """A whole Twilio call, transcribed with C{params}: (callSid, streamId by role)."""
    sid, peer, client, factory = await started_stream(gateway)
    body = {"namespace": "twilio", "guid": sid, "customerId": "C1", "agentId": "A1",
            "autotranscribeParams": params}
    code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", body)
    assert code == 200, started
    ids = {role: started["autotranscribeResponse"][role]["streamId"] for role in ("customer", "agent")}
    await pace(reactor, peer.media_frames({"inbound": inbound, "outbound": outbound}), client.send_text)
    client.send_text(peer.stop())
    await factory.closed
    return sid, ids


async def after_call(gateway, external_id: str) -> list[dict]:
    response = await gateway.get("/conversation/v1/conversation/messages", externalId=external_id)
    assert response.code == 200
    return (await response.json())["items"]


@pytest_twisted.ensureDeferred
async def test_direct_api_formats_and_redacts_by_default(gateway, monkeypatch):
    scripted(monkeypatch, gateway, ["my pin is one two three four", "it costs twenty five dollars"])
    transcripts, final, _ = await stream(gateway, START, "text-e2e-1")
    texts = [t["utterance"][0]["text"] for t in transcripts]
    assert texts == ["My pin is ####.", "It costs $25.00."]
    assert final["status"]["code"] == "1000"
    assert [i["text"] for i in await after_call(gateway, "text-e2e-1")] == texts


@pytest_twisted.ensureDeferred
async def test_direct_api_detailed_tokens_with_punctuation_and_merged_times(gateway, monkeypatch):
    language = scripted(monkeypatch, gateway, ["it is twenty two"])
    start = {**START, "detailedToken": True, "redactionOutput": "unredacted"}
    (transcript,), _, _ = await stream(gateway, start, "text-e2e-2")
    words = language.recognizers[0]
    item = transcript["utterance"][0]
    assert item["text"] == "It is 22."
    tokens = item["tokens"]
    assert [t["content"] for t in tokens] == ["It", "is", "22"]
    assert tokens[-1]["punctuationAfter"] == "."
    # "twenty two" -> one token from the start of "twenty" to the end of "two".
    step = 1000 // 4
    assert (tokens[2]["start"], tokens[2]["end"]) == (2 * step, 4 * step - 1)
    assert words.heard == AUDIO
    (stored,) = await after_call(gateway, "text-e2e-2")
    assert stored["tokens"] == tokens


@pytest_twisted.ensureDeferred
async def test_direct_api_redacted_and_unredacted(gateway, monkeypatch):
    scripted(monkeypatch, gateway, ["my pin is one two three four"])
    start = {**START, "redactionOutput": "redacted_and_unredacted"}
    (transcript,), _, _ = await stream(gateway, start, "text-e2e-3")
    item = transcript["utterance"][0]
    assert (item["text"], item["unredactedText"]) == ("My pin is ####.", "My pin is 1234.")
    (stored,) = await after_call(gateway, "text-e2e-3")
    assert (stored["text"], stored["unredactedText"]) == ("My pin is ####.", "My pin is 1234.")


@pytest_twisted.ensureDeferred
async def test_direct_api_without_smart_formatting_gives_the_recognisers_words(gateway, monkeypatch):
    scripted(monkeypatch, gateway, ["my pin is one two three four"])
    start = {**START, "smartFormatting": False, "redactionOutput": "unredacted"}
    (transcript,), _, _ = await stream(gateway, start, "text-e2e-4")
    assert transcript["utterance"][0]["text"] == "my pin is one two three four"
    (stored,) = await after_call(gateway, "text-e2e-4")
    assert "unredactedText" not in stored and "tokens" not in stored


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("fields, code", [
    ({"smartFormatting": False}, "4092"),
    ({"smartFormatting": False, "redactionOutput": "redacted_and_unredacted"}, "4092"),
    ({"detailedToken": True}, "4093"),
    ({"detailedToken": True, "redactionOutput": "redacted_and_unredacted"}, "4093"),
])
async def test_direct_api_refuses_what_the_spec_refuses(gateway, monkeypatch, fields, code):
    scripted(monkeypatch, gateway)
    client, factory = await open_stream(gateway)
    client.send_json({**START, **fields})
    final = await client.next_message()
    assert (final["message"], final["status"]["code"]) == ("finalResponse", code)
    assert (await factory.closed)[0] == int(code)


@pytest_twisted.ensureDeferred
async def test_update_vocabulary_applies_to_the_next_utterances(gateway, monkeypatch):
    scripted(monkeypatch, gateway, ["i am a member of i triple e", "i live at seven one seven north shoreline boulevard"])
    vocabulary = {"message": "updateVocabulary", "phrases": [
        {"phrase": "IEEE", "category": "company", "soundsLike": ["i triple e"]},
        {"phrase": "717 N Shoreline Blvd", "category": "address"},
    ]}
    bad = {"message": "updateVocabulary", "phrases": [{"phrase": "x", "category": "planet"}]}
    transcripts, _, replies = await stream(gateway, START, "text-e2e-5", [vocabulary, bad])
    assert [r["status"]["code"] for r in replies] == ["1000", "4091"]
    assert [t["utterance"][0]["text"] for t in transcripts] == [
        "I am a member of IEEE.", "I live at 717 N Shoreline Blvd."]


@pytest_twisted.ensureDeferred
async def test_the_agents_question_redacts_the_customers_answer_across_sockets(gateway, monkeypatch):
    scripted(monkeypatch, gateway, ["what's your pin"], ["one two"])
    agent, _, _ = await stream(gateway, {**START, "sender": AGENT}, "text-e2e-6")
    customer, _, _ = await stream(gateway, START, "text-e2e-6")
    assert agent[0]["utterance"][0]["text"] == "What's your pin?"
    assert customer[0]["utterance"][0]["text"] == "##."


@pytest_twisted.ensureDeferred
async def test_twilio_call_is_formatted_and_redacted_on_the_webhook_and_after_call(
        gateway, webhook, monkeypatch):
    script = ["my card is four one one one one one one one", "one one one one one one one one"]
    scripted(monkeypatch, gateway, script, script)
    sid, ids = await twilio_call(gateway, {"language": "en-US"}, AUDIO, AUDIO)
    posts = await webhook.posts_of_call(sid, 4, ids, {"customer": "C1", "agent": "A1"})
    texts = [p.body["autotranscribeResponse"]["utterance"][0]["text"] for p in posts]
    # Each participant's second half completes its card number, whatever the
    # other said in between.
    assert sorted(texts) == sorted(["My card is 41111111.", "########."] * 2), texts
    items = await after_call(gateway, sid)
    assert sorted(i["text"] for i in items) == sorted(texts)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("params", [
    {"smartFormatting": False},
    {"smartFormatting": False, "redactionOutput": "redacted_and_unredacted"},
    {"smartFormatting": "yes", "redactionOutput": "unredacted"},
    {"detailedToken": True},
])
async def test_start_streaming_refuses_what_the_spec_refuses_with_400_202(gateway, params):
    body = {"namespace": "twilio", "guid": call_sid(), "customerId": "C1", "agentId": "A1",
            "autotranscribeParams": {"language": "en-US", **params}}
    code, answer = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", body)
    assert (code, answer["error"]["code"]) == (400, "400-202"), answer


@pytest_twisted.ensureDeferred
async def test_siprec_call_is_formatted_and_redacted_with_the_calls_context(gateway, webhook, tmp_path, monkeypatch):
    """sipp records a call; the agent's question makes both participants' short answers sensitive."""
    script = ["what's your pin", "one two"]
    scripted(monkeypatch, gateway, script, script)
    call = await sipp_recording(gateway, tmp_path, AUDIO)
    guid = call.guid
    body = {"namespace": NAMESPACE, "guid": guid, "customerId": "C1", "agentId": "A1",
            "autotranscribeParams": {"language": "en-US"}}
    code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", body)
    assert code == 200, started
    ids = {role: started["autotranscribeResponse"][role]["streamId"] for role in ("customer", "agent")}
    call.go_on()
    await send_streams(reactor, [(call.session.ports[1], AUDIO)])
    # Each scripted recogniser speaks after one and two seconds of its audio.
    posts = await webhook.posts_of_call(guid, 4, ids, {"customer": "C1", "agent": "A1"})
    texts = [p.body["autotranscribeResponse"]["utterance"][0]["text"] for p in posts]
    assert sorted(texts) == sorted(["What's your pin?", "##."] * 2), texts
    call.go_on()
    assert await call.sipp.ended == 0, call.sipp.output
    assert sorted(i["text"] for i in await after_call(gateway, guid)) == sorted(texts)
