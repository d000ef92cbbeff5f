"""
Twilio Media Streams end to end: a test peer speaking Twilio's frames byte for
byte over a real WebSocket, REST start/stop with trackMap, transcripts on the
HTTPS webhook and from the after-call endpoint.
"""

import json
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from mgateway.tokens import TokenSigner
from mgateway.ingress.twilio.signature import twilio_signature
from tests.support.audio import pace, read_pcm, until
from tests.support.gateway import TWILIO_AUTH_TOKEN
from tests.support.twilio_peer import TwilioPeer
from tests.support.wsclient import connect, refusal


def call_sid() -> str:
    return "CA" + uuid.uuid4().hex


async def stream_url(gateway) -> str:
    response = await gateway.get("/mg-autotranscribe/v1/twilio-media-stream-url")
    assert response.code == 200
    url = (await response.json())["streamingUrl"]
    assert "/mg-twilio-autotranscribe/twilio-media/" in url and "?" not in url
    return url


def signed_headers(gateway, url: str) -> dict:
    """Twilio signs the wss:// URL it was given."""
    path = url.split(str(gateway.port), 1)[1]
    signed = f"wss://127.0.0.1:{gateway.port}{path}"
    return {"X-Twilio-Signature": twilio_signature(TWILIO_AUTH_TOKEN, signed)}


async def open_twilio(gateway, url=None):
    url = url or await stream_url(gateway)
    opened, factory = connect(url, headers=signed_headers(gateway, url))
    return await opened, factory


async def started_stream(gateway, custom_parameters=None):
    """
    A new call's Twilio stream, connected and started: (callSid, peer, client,
    factory) once the gateway holds the call (the start frame has to reach it
    before start-streaming finds the call).
    """
    sid = call_sid()
    peer = TwilioPeer(sid)
    client, factory = await open_twilio(gateway)
    client.send_text(peer.connected())
    client.send_text(peer.start(custom_parameters))
    await until(reactor, lambda: gateway.service.registry.find("twilio", sid) is not None)
    return sid, peer, client, factory


@pytest_twisted.ensureDeferred
async def test_forked_call_is_transcribed_per_track_with_the_track_map(gateway, webhook):
    sid, peer, client, factory = await started_stream(gateway, {"FirstName": "Jane"})
    body = {"namespace": "twilio", "guid": sid, "customerId": "TT9833237", "agentId": "RE223444211993",
            "autotranscribeParams": {"language": "ko-KR"},
            "twilioParams": {"trackMap": {"inbound": "agent", "outbound": "customer"}}}
    code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", body)
    assert code == 200, started
    ids = {role: started["autotranscribeResponse"][role]["streamId"] for role in ("customer", "agent")}

    inbound, outbound = read_pcm("agent.wav"), read_pcm("customer.wav")
    await pace(reactor, peer.media_frames({"inbound": inbound, "outbound": outbound}), client.send_text)
    legs = gateway.service.registry.find("twilio", sid).legs
    await until(reactor, lambda: legs["inbound"].position_bytes == len(inbound) + 52 * 16
                and legs["outbound"].position_bytes == len(outbound) + 52 * 16)
    code, stopped = await gateway.post_json("/mg-autotranscribe/v1/stop-streaming",
                               {"namespace": "twilio", "guid": sid})
    assert code == 200
    summaries = {role: stopped["autotranscribeResponse"][role]["summary"] for role in ids}
    # 52 ms of timeline before the first timestamp is part of the stream,
    # counted apart from the audio received.
    assert summaries["agent"]["totalAudioBytes"] == len(inbound)
    assert summaries["customer"]["totalAudioBytes"] == len(outbound)
    assert summaries["agent"]["audioDurationMs"] == len(inbound) // 16
    assert summaries["agent"]["filledAudioMs"] == summaries["customer"]["filledAudioMs"] == 52
    client.send_text(peer.stop())
    await factory.closed

    expected = summaries["agent"]["transcripts"] + summaries["customer"]["transcripts"]
    # customer.wav holds two sentences with a clear pause; agent.wav is only
    # required to produce speech.
    assert summaries["customer"]["transcripts"] >= 2 and summaries["agent"]["transcripts"] >= 1
    await webhook.posts_of_call(sid, expected, ids, {"customer": "TT9833237", "agent": "RE223444211993"})
    response = await gateway.get("/conversation/v1/conversation/messages", externalId=sid)
    assert len((await response.json())["items"]) == expected
    code, body = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", body)
    assert body["error"]["code"] == "400-203", "the stream ended with the call"


@pytest_twisted.ensureDeferred
async def test_start_before_the_stream_connects_is_400_203(gateway):
    code, body = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", {
        "namespace": "twilio", "guid": call_sid(), "customerId": "c", "agentId": "a",
        "autotranscribeParams": {"language": "ko-KR"}})
    assert (code, body["error"]["code"]) == (400, "400-203")


@pytest_twisted.ensureDeferred
async def test_one_url_serves_several_streams_and_query_form_works(gateway):
    url = await stream_url(gateway)
    first, _ = await open_twilio(gateway, url)
    second, _ = await open_twilio(gateway, url)
    token = url.rsplit("/", 1)[1]
    base = url.rsplit("/", 1)[0]
    third, _ = await open_twilio(gateway, f"{base}?token={token}")
    for client in (first, second, third):
        client.sendClose()


@pytest_twisted.ensureDeferred
async def test_expired_forged_or_unsigned_streams_are_refused(gateway):
    url = await stream_url(gateway)
    base = url.rsplit("/", 1)[0]
    past = Clock()
    past.advance(reactor.seconds() - 301)
    expired = TokenSigner(gateway.service.tokens._key, 300, past).issue("twilio", "test-app")
    direct_token = gateway.service.tokens.issue("direct", "test-app")
    with capturedLogs() as events:
        for bad in (f"{base}/{expired}", f"{base}/{direct_token}", url[:-3] + "xyz"):
            opened, _ = connect(bad, headers=signed_headers(gateway, bad))
            assert "[401]" in await refusal(opened), bad
        opened, _ = connect(url, headers={"X-Twilio-Signature": "bm90IGl0"})
        assert "[403]" in await refusal(opened)
    refused = [e for e in events if e.get("log_format", "").startswith("twilio stream refused")]
    assert len(refused) == 4, refused


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("frame, close_code", [
    ("not json at all", 4007),
    ('{"event": "media", "media": {"track": "inbound", "timestamp": "0", "payload": ""}}', 4008),
])
async def test_bad_frames_close_only_that_socket(gateway, frame, close_code):
    broken, broken_factory = await open_twilio(gateway)
    healthy, healthy_factory = await open_twilio(gateway)
    broken.send_text(frame)
    code, _ = await broken_factory.closed
    assert code == close_code
    peer = TwilioPeer(call_sid(), tracks=["inbound"])
    healthy.send_text(peer.start())
    await pace(reactor, peer.media_frames({"inbound": read_pcm("single.wav")[:3200]}), healthy.send_text)
    assert not healthy_factory.closed.called
    healthy.send_text(peer.stop())
    assert (await healthy_factory.closed)[0] == 1000


@pytest_twisted.ensureDeferred
async def test_oversized_frame_gets_a_clean_close(gateway):
    client, factory = await open_twilio(gateway)
    client.send_text("x" * 200_000)
    code, _ = await factory.closed
    assert code == 1009


@pytest_twisted.ensureDeferred
async def test_a_track_whose_socket_reconnects_goes_on_being_transcribed(gateway):
    """One socket per track; Twilio reconnects the inbound one mid-call (its "Handling Failures")."""
    sid = call_sid()
    inbound, inbound_factory = await open_twilio(gateway)
    outbound, outbound_factory = await open_twilio(gateway)
    inbound.send_text(TwilioPeer(sid, tracks=["inbound"]).start())
    outbound.send_text(TwilioPeer(sid, tracks=["outbound"]).start())
    await until(reactor, lambda: len(getattr(gateway.service.registry.find("twilio", sid), "legs", ())) == 2)
    code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", {
        "namespace": "twilio", "guid": sid, "customerId": "c", "agentId": "a",
        "autotranscribeParams": {"language": "ko-KR"}})
    assert code == 200, started
    part = read_pcm("single.wav")[:8000]  # 250 ms
    first = TwilioPeer(sid, tracks=["inbound"], first_timestamp=0)
    await pace(reactor, first.media_frames({"inbound": part}), inbound.send_text)
    legs = gateway.service.registry.find("twilio", sid).legs
    await until(reactor, lambda: legs["inbound"].position_bytes == len(part))
    inbound.sendClose()
    await inbound_factory.closed

    again, again_factory = await open_twilio(gateway)
    peer = TwilioPeer(sid, tracks=["inbound"], first_timestamp=0)
    again.send_text(peer.start())
    again.send_text(json.dumps({"event": "a-future-event", "sequenceNumber": "2", "streamSid": peer.stream_sid}))
    await pace(reactor, peer.media_frames({"inbound": part}), again.send_text)
    await until(reactor, lambda: legs["inbound"].position_bytes == 2 * len(part))
    assert not again_factory.closed.called, "the reconnected track is taken, not refused"
    code, stopped = await gateway.post_json("/mg-autotranscribe/v1/stop-streaming", {"namespace": "twilio", "guid": sid})
    assert stopped["autotranscribeResponse"]["customer"]["summary"]["totalAudioBytes"] == 2 * len(part)
    for client, factory in ((again, again_factory), (outbound, outbound_factory)):
        client.sendClose()
        await factory.closed

    response = await gateway.get("/metrics", headers={})
    assert response.code == 200
    metrics = await response.text()
    assert 'asapp_mg_twilio_frames_total{event="unknown"}' in metrics, metrics
