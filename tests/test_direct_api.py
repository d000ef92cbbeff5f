"""
The direct WebSocket API end to end: a real gateway on loopback with the real
Korean Vosk model, a token from the REST endpoint, speech streamed in 20 ms
chunks, transcripts back on the socket and from the after-call endpoint.
"""

import json

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from tests.support.audio import chunks, pace, read_pcm
from tests.support.gateway import AUTH
from tests.support.wsclient import connect

START = {"message": "startStream", "sender": {"role": "customer", "externalId": "JD232442"},
         "language": "ko-KR"}


async def streaming_url(gateway, external_id=None):
    body = {"externalId": external_id} if external_id else None
    response = await gateway.post("/autotranscribe/v1/streaming-url", body)
    assert response.code == 200, await response.text()
    return (await response.json())["streamingUrl"]


async def open_stream(gateway, external_id=None):
    url = await streaming_url(gateway, external_id)
    opened, factory = connect(url)
    return await opened, factory


@pytest_twisted.ensureDeferred
async def test_speech_is_transcribed_on_the_socket_and_kept_for_after_call(gateway):
    client, factory = await open_stream(gateway, "conv-direct-1")
    client.send_json(START)
    start = await client.next_message()
    assert start["message"] == "startResponse"
    assert start["status"] == {"code": "1000", "description": "OK"}
    stream_id = start["streamID"]

    pcm = read_pcm("customer.wav")
    await pace(reactor, chunks(pcm), client.send_audio)
    client.send_json({"message": "finishStream"})

    transcripts = []
    while True:
        message = await client.next_message()
        if message["message"] != "transcript":
            break
        transcripts.append(message)
    final = message
    audio_ms = len(pcm) // 16

    assert len(transcripts) >= 2, transcripts
    for t in transcripts:
        assert t["utterance"][0]["text"].strip()
        assert 0 <= t["start"] < t["end"] <= audio_ms, (t, audio_ms)
    assert [t["start"] for t in transcripts] == sorted(t["start"] for t in transcripts)

    assert final == {
        "message": "finalResponse",
        "streamId": stream_id,
        "status": {"code": "1000", "description": "OK"},
        "summary": {
            "totalAudioBytes": len(pcm),
            "audioDurationMs": audio_ms,
            "streamingSeconds": final["summary"]["streamingSeconds"],
            "transcripts": len(transcripts),
        },
    }
    assert (await factory.closed)[0] == 1000

    response = await gateway.get("/conversation/v1/conversation/messages", externalId="conv-direct-1")
    assert response.code == 200
    items = (await response.json())["items"]
    assert [i["text"] for i in items] == [t["utterance"][0]["text"] for t in transcripts]
    for item in items:
        assert item["sender"] == {"role": "customer", "externalId": "JD232442"}
        assert item["messageId"] and item["createdTimestamp"].endswith("Z")
        assert item["clientTimestamp"].endswith("Z")


@pytest_twisted.ensureDeferred
async def test_detailed_tokens_carry_word_timings_inside_the_utterance(gateway):
    client, factory = await open_stream(gateway)
    client.send_json({**START, "detailedToken": True, "redactionOutput": "unredacted"})
    assert (await client.next_message())["message"] == "startResponse"
    await pace(reactor, chunks(read_pcm("single.wav")), client.send_audio)
    client.send_json({"message": "finishStream"})
    message = await client.next_message()
    assert message["message"] == "transcript", "flush on finishStream must deliver the last words"
    (item,) = message["utterance"]
    assert item["tokens"], item
    for token in item["tokens"]:
        assert message["start"] <= token["start"] <= token["end"] <= message["end"]
    assert (await client.next_message())["message"] == "finalResponse"


@pytest_twisted.ensureDeferred
async def test_forged_token_is_refused_at_upgrade(gateway):
    url = await streaming_url(gateway)
    opened, factory = connect(url[:-4] + "AAAA")
    with pytest.raises(Exception):
        await opened


@pytest_twisted.ensureDeferred
async def test_streaming_url_needs_credentials(gateway):
    response = await gateway.post("/autotranscribe/v1/streaming-url", headers={})
    assert response.code == 401
    body = await response.json()
    assert body["error"]["code"] == "401-01"
    assert body["error"]["requestId"]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("first, code", [
    ("{not json", 4040),
    ('{"message": "startStream", "sender": {"role": "customer", "externalId": "x"}, '
     '"language": "xx-XX"}', 4050),
    ('{"message": "startStream", "sender": {"role": "customer", "externalId": "x"}, '
     '"language": "ko-KR", "encoding": "FLAC"}', 4051),
    ('{"message": "startStream", "sender": {"role": "customer", "externalId": "x"}, '
     '"language": "ko-KR", "samplingRate": 16000}', 4053),
    ('{"message": "finishStream"}', 4056),
])
async def test_bad_first_message_gets_final_response_and_close_code(gateway, first, code):
    client, factory = await open_stream(gateway)
    client.send_text(first)
    final = await client.next_message()
    assert final["message"] == "finalResponse"
    assert final["status"]["code"] == str(code)
    assert (await factory.closed)[0] == code


@pytest_twisted.ensureDeferred
async def test_oversized_audio_frame_ends_only_that_session(gateway):
    broken, broken_factory = await open_stream(gateway)
    healthy, healthy_factory = await open_stream(gateway)
    for client in (broken, healthy):
        client.send_json(START)
        assert (await client.next_message())["message"] == "startResponse"
    broken.send_audio(b"\x00" * (65536 + 2))
    final = await broken.next_message()
    assert final["status"]["code"] == "4040"
    assert (await broken_factory.closed)[0] == 4040
    healthy.send_audio(read_pcm("single.wav")[:3200])
    healthy.send_json({"message": "finishStream"})
    while (message := await healthy.next_message())["message"] == "transcript":
        pass
    assert message["status"]["code"] == "1000"
    assert message["summary"]["totalAudioBytes"] == 3200


@pytest_twisted.ensureDeferred
async def test_messages_endpoint_requires_external_id_and_auth(gateway):
    assert (await gateway.get("/conversation/v1/conversation/messages")).code == 400
    unauthorised = await gateway.get("/conversation/v1/conversation/messages",
                                     headers={"asapp-api-id": "test-app", "asapp-api-secret": "no"},
                                     externalId="x")
    assert unauthorised.code == 401
    empty = await gateway.get("/conversation/v1/conversation/messages", externalId="nobody")
    assert (await empty.json()) == {"items": []}


@pytest_twisted.ensureDeferred
async def test_an_empty_external_id_gets_a_streaming_url_and_a_malformed_one_is_400(gateway):
    empty = await gateway.post("/autotranscribe/v1/streaming-url", {"externalId": ""})
    assert empty.code == 200, await empty.text()
    assert "token=" in (await empty.json())["streamingUrl"]
    for bad in ("conv-\udc00", "x" * 257, 42):
        response = await gateway.post("/autotranscribe/v1/streaming-url", {"externalId": bad})
        body = await response.json()
        assert (response.code, body["error"]["code"]) == (400, "400-01"), (bad, body)


@pytest_twisted.ensureDeferred
async def test_a_lone_surrogate_external_id_on_the_after_call_lookup_is_400_not_500(gateway):
    # The guide's curl sends the id as a JSON body on the GET.
    response = await treq.request("GET", gateway.base + "/conversation/v1/conversation/messages",
                                  data=json.dumps({"externalId": "conv-\udc00"}).encode(),
                                  headers=AUTH)
    body = await response.json()
    assert (response.code, body["error"]["code"]) == (400, "400-01"), body


@pytest_twisted.ensureDeferred
async def test_a_lone_surrogate_sender_external_id_is_4040(gateway):
    client, factory = await open_stream(gateway)
    client.send_text('{"message": "startStream", "sender": {"role": "customer", '
                     '"externalId": "JD-\\udc00"}, "language": "ko-KR"}')
    final = await client.next_message()
    assert (final["message"], final["status"]["code"]) == ("finalResponse", "4040"), final
    assert (await factory.closed)[0] == 4040
