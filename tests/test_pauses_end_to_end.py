"""
Utterances end in digital silence, end to end: two sentences with a 3 s pause
of exact silence give two transcripts, the first delivered before the second
sentence is sent, through the direct API (zero L16) and Twilio Media Streams
(0xFF mu-law, what Twilio sends for silence). The gateway's own endpointer
(L{mgateway.asr.endpointer}) ends them; the pauses of every kind are covered
on the transcriber in C{tests/test_endpointer.py}.
"""

from __future__ import annotations

import uuid

import pytest_twisted
from twisted.internet import reactor

from mgateway.media.g711 import ulaw_encode
from tests.support.audio import chunks, pace, until
from tests.support.pauses import two_sentences
from tests.support.speech import BYTES_PER_MS
from tests.support.twilio_peer import TwilioPeer
from tests.test_direct_api import START, open_stream
from tests.test_twilio_api import open_twilio


@pytest_twisted.ensureDeferred
async def test_direct_api_two_sentences_with_zero_l16_between_are_two_transcripts_on_time(gateway):
    first, pause, second = two_sentences("zero L16")
    client, factory = await open_stream(gateway)
    client.send_json(START)
    assert (await client.next_message())["message"] == "startResponse"

    await pace(reactor, chunks(first + pause), client.send_audio)
    earlier = await client.next_message()
    assert earlier["message"] == "transcript", "the first sentence ended in the pause"
    await pace(reactor, chunks(second), client.send_audio)
    later = await client.next_message()
    assert later["message"] == "transcript", "the second sentence ended in the silence after it"
    client.send_json({"message": "finishStream"})
    final = await client.next_message()

    assert final["message"] == "finalResponse" and final["summary"]["transcripts"] == 2, final
    assert earlier["end"] < len(first) // BYTES_PER_MS < (len(first) + len(pause)) // BYTES_PER_MS - 300 <= later["start"]
    assert (await factory.closed)[0] == 1000


@pytest_twisted.ensureDeferred
async def test_twilio_two_sentences_with_0xff_between_are_two_webhook_posts_on_time(gateway, webhook):
    first, pause, second = two_sentences("zero L16")
    assert set(ulaw_encode(pause)) == {0xFF}, "the pause goes out as Twilio's silence"
    sid = "CA" + uuid.uuid4().hex
    peer = TwilioPeer(sid, tracks=("inbound",))
    client, factory = await open_twilio(gateway)
    client.send_text(peer.connected())
    client.send_text(peer.start())
    await until(reactor, lambda: gateway.service.registry.find("twilio", sid) is not None)
    code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", {
        "namespace": "twilio", "guid": sid, "customerId": "C1", "agentId": "A1",
        "autotranscribeParams": {"language": "ko-KR"}})
    assert code == 200, started
    frames = peer.media_frames({"inbound": first + pause + second})
    in_pause = -(-(len(first) + len(pause)) // 320)
    posts = lambda received: [r for r in received if r.body["externalConversationId"] == sid]

    await pace(reactor, frames[:in_pause], client.send_text)
    await webhook.wait_until(lambda received: len(posts(received)) == 1)
    await pace(reactor, frames[in_pause:], client.send_text)
    await webhook.wait_until(lambda received: len(posts(received)) == 2)
    client.send_text(peer.stop())
    await factory.closed

    earlier, later = (post.body["autotranscribeResponse"] for post in posts(webhook.received))
    assert [earlier["message"], later["message"]] == ["transcript", "transcript"]
    # Twilio's timeline starts 52 ms before the first timestamp.
    assert earlier["end"] < 52 + len(first) // BYTES_PER_MS
    assert later["start"] >= 52 + (len(first) + len(pause)) // BYTES_PER_MS - 300
    assert len(posts(webhook.received)) == 2
