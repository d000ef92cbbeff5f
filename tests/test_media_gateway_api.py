"""
The Start/Stop API end to end: media fed through the call registry's ingress
interface (as every ingress does), REST start/stop on the real gateway, the
webhook on a real HTTPS receiver, and the after-call endpoint.
"""

import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from tests.support.audio import chunks, pace, read_pcm

WEBHOOK_KEYS = {"type", "externalConversationId", "streamId", "sender", "autotranscribeResponse"}


def new_guid() -> str:
    return str(uuid.uuid4().int)[:20].zfill(20)


def start_body(guid, **extra):
    return {"namespace": "siprec", "guid": guid, "customerId": "TT9833237",
            "agentId": "RE223444211993", "autotranscribeParams": {"language": "ko-KR"}, **extra}


@pytest_twisted.ensureDeferred
async def test_both_participants_are_transcribed_to_webhook_and_after_call(gateway, webhook):
    guid = new_guid()
    media = gateway.service.registry.attach("siprec", guid, ["0", "1"])
    code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming",
                               start_body(guid, siprecParams={"mediaLineOrder": "AGENT_FIRST"}))
    assert code == 200, started
    assert started["isOk"] is True
    ids = {role: started["autotranscribeResponse"][role]["streamId"] for role in ("customer", "agent")}
    for role in ids:
        assert started["autotranscribeResponse"][role]["status"] == {"code": 1000, "description": "OK"}

    agent_pcm, customer_pcm = read_pcm("agent.wav"), read_pcm("customer.wav")
    await gatherResults([
        pace(reactor, chunks(agent_pcm), lambda chunk: media.audio("0", chunk)),
        pace(reactor, chunks(customer_pcm), lambda chunk: media.audio("1", chunk)),
    ])
    code, stopped = await gateway.post_json("/mg-autotranscribe/v1/stop-streaming",
                               {"namespace": "siprec", "guid": guid})
    assert code == 200, stopped
    summaries = {role: stopped["autotranscribeResponse"][role]["summary"] for role in ids}
    assert summaries["agent"]["totalAudioBytes"] == len(agent_pcm)
    assert summaries["customer"]["totalAudioBytes"] == len(customer_pcm)
    assert summaries["customer"]["audioDurationMs"] == len(customer_pcm) // 16
    assert stopped["autotranscribeResponse"]["agent"]["streamId"] == ids["agent"]

    expected = summaries["agent"]["transcripts"] + summaries["customer"]["transcripts"]
    mine = lambda received: [r for r in received if r.body["externalConversationId"] == guid]
    await webhook.wait_until(lambda received: len(mine(received)) >= expected)
    posts = mine(webhook.received)
    # customer.wav holds two sentences with a clear pause; agent.wav is only
    # required to produce speech.
    assert summaries["customer"]["transcripts"] >= 2 and summaries["agent"]["transcripts"] >= 1
    for post in posts:
        body = post.body
        assert set(body) == WEBHOOK_KEYS
        assert body["type"] == "transcript"
        role = body["sender"]["role"]
        assert body["streamId"] == ids[role]
        assert body["sender"]["externalId"] == {"customer": "TT9833237", "agent": "RE223444211993"}[role]
        response = body["autotranscribeResponse"]
        assert set(response) == {"message", "start", "end", "utterance"}
        assert response["message"] == "transcript"
        assert 0 <= response["start"] < response["end"]
        assert response["utterance"][0]["text"].strip()
        assert post.headers["x-test-secret"] == "s3cret"
        assert post.headers["content-type"] == "application/json"

    response = await gateway.get("/conversation/v1/conversation/messages", externalId=guid)
    items = (await response.json())["items"]
    assert sorted(i["text"] for i in items) == sorted(
        p.body["autotranscribeResponse"]["utterance"][0]["text"] for p in posts)
    assert {i["sender"]["role"] for i in items} == {"customer", "agent"}
    await media.hang_up()


@pytest_twisted.ensureDeferred
async def test_pause_and_resume_twice_summaries_add_up_to_audio_sent_while_started(gateway):
    guid = new_guid()
    media = gateway.service.registry.attach("siprec", guid, ["0", "1"])
    pcm = read_pcm("single.wav")
    total = 0
    for period in range(3):
        code, _ = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", start_body(guid))
        assert code == 200
        part = pcm[: 3200 * (period + 1)]
        await pace(reactor, chunks(part), lambda chunk: media.audio("0", chunk))
        code, stopped = await gateway.post_json("/mg-autotranscribe/v1/stop-streaming",
                                   {"namespace": "siprec", "guid": guid})
        assert code == 200
        assert stopped["autotranscribeResponse"]["customer"]["summary"]["totalAudioBytes"] == len(part)
        total += stopped["autotranscribeResponse"]["customer"]["summary"]["totalAudioBytes"]
        await pace(reactor, chunks(pcm[:3200]), lambda chunk: media.audio("0", chunk))  # on hold: not counted
    assert total == 3200 * 6
    await media.hang_up()


@pytest_twisted.ensureDeferred
async def test_error_codes_of_start_and_stop(gateway):
    guid = new_guid()
    start_path, stop_path = "/mg-autotranscribe/v1/start-streaming", "/mg-autotranscribe/v1/stop-streaming"
    code, body = await gateway.post_json(start_path, start_body(guid))
    assert (code, body["error"]["code"]) == (400, "400-203")
    assert body["error"]["requestId"] and body["error"]["message"]

    media = gateway.service.registry.attach("siprec", guid, ["0", "1"])
    code, body = await gateway.post_json(stop_path, {"namespace": "siprec", "guid": guid})
    assert (code, body["error"]["code"]) == (409, "409-201")
    code, body = await gateway.post_json(start_path, {"namespace": "siprec", "guid": guid})
    assert (code, body["error"]["code"]) == (400, "400-201")
    code, body = await gateway.post_json(start_path, start_body(guid, namespace="skype"))
    assert (code, body["error"]["code"]) == (400, "400-201")
    code, body = await gateway.post_json(start_path,
                            start_body(guid, autotranscribeParams={"language": "xx-XX"}))
    assert (code, body["error"]["code"]) == (400, "400-202")
    code, body = await gateway.post_json(start_path,
                            start_body(guid, autotranscribeParams={"language": "ko-KR", "detailedToken": True}))
    assert (code, body["error"]["code"]) == (400, "400-202")
    code, _ = await gateway.post_json(start_path, start_body(guid))
    assert code == 200
    code, body = await gateway.post_json(start_path, start_body(guid))
    assert (code, body["error"]["code"]) == (409, "409-201")

    response = await gateway.post(start_path, raw=b"{not json")
    assert response.code == 400
    assert (await response.json())["error"]["code"] == "400-201"

    await media.hang_up()
    code, body = await gateway.post_json(stop_path, {"namespace": "siprec", "guid": guid})
    assert (code, body["error"]["code"]) == (400, "400-203")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("headers", [{}, {"asapp-api-id": "test-app"},
                                     {"asapp-api-id": "test-app", "asapp-api-secret": "wrong"},
                                     {"asapp-api-id": "nobody", "asapp-api-secret": "test-secret"}])
async def test_every_endpoint_requires_matching_credentials(gateway, headers):
    for path in ("/mg-autotranscribe/v1/start-streaming", "/mg-autotranscribe/v1/stop-streaming",
                 "/autotranscribe/v1/streaming-url"):
        response = await gateway.post(path, start_body("1"), headers=headers)
        assert response.code == 401
        assert (await response.json())["error"]["code"] == "401-01"
    for path in ("/conversation/v1/conversation/messages", "/mg-autotranscribe/v1/twilio-media-stream-url"):
        response = await gateway.get(path, headers=headers, externalId="x")
        assert response.code == 401


@pytest_twisted.ensureDeferred
async def test_unknown_path_is_a_json_404(gateway):
    response = await gateway.get("/nope")
    assert response.code == 404
    assert (await response.json())["error"]["code"] == "404-01"


@pytest_twisted.ensureDeferred
async def test_a_lone_surrogate_in_an_id_is_400_201_and_the_call_stays_startable(gateway):
    guid = new_guid()
    media = gateway.service.registry.attach("siprec", guid, ["0", "1"])
    start_path = "/mg-autotranscribe/v1/start-streaming"
    for field in ("customerId", "agentId"):
        # json.dumps writes the lone surrogate as the escape \udc00, as a client would.
        code, body = await gateway.post_json(start_path, start_body(guid, **{field: "cust-\udc00"}))
        assert (code, body["error"]["code"]) == (400, "400-201"), body
        assert field in body["error"]["message"]
    code, body = await gateway.post_json(start_path, start_body("\udc00" + guid))
    assert (code, body["error"]["code"]) == (400, "400-201"), body
    code, body = await gateway.post_json(start_path, start_body(guid))
    assert code == 200, body
    await media.hang_up()


@pytest_twisted.ensureDeferred
async def test_json_nested_a_thousand_deep_is_400_201_not_a_500(gateway):
    for path in ("/mg-autotranscribe/v1/start-streaming", "/mg-autotranscribe/v1/stop-streaming"):
        response = await gateway.post(path, raw=b"[" * 20_000 + b"]" * 20_000)
        body = await response.json()
        assert (response.code, body["error"]["code"]) == (400, "400-201"), body
        assert "nested" in body["error"]["message"]
    response = await gateway.post("/autotranscribe/v1/streaming-url", raw=b'{"a":' * 5_000 + b"1" + b"}" * 5_000)
    assert response.code == 400, await response.text()


@pytest_twisted.ensureDeferred
async def test_an_unsupported_language_is_400_202_whether_or_not_the_call_exists(gateway):
    guid = new_guid()
    unsupported = start_body(guid, autotranscribeParams={"language": "xx-XX"})
    code, body = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", unsupported)
    assert (code, body["error"]["code"]) == (400, "400-202"), body
    media = gateway.service.registry.attach("siprec", guid, ["0", "1"])
    code, body = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", unsupported)
    assert (code, body["error"]["code"]) == (400, "400-202"), body
    await media.hang_up()
