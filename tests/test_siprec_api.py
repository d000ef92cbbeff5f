"""
SIPREC end to end: sipp as the recording client (real SIP over UDP and TCP,
the first recorded stream's RTP played from a capture), the second stream
from a test sender, REST start/stop with the
guid decoded from the Avaya UCID, transcripts on the HTTPS webhook and from
the after-call endpoint.
"""

import re
import uuid

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor

from mgateway.ingress.siprec.srs import NAMESPACE
from tests.support.audio import read_pcm, until
from tests.support.pcap import write_rtp_pcap
from tests.support.siprec_peer import RtpSender, free_sip_port, go_on, new_ucid, run_sipp, send_streams


def sip_target(gateway) -> str:
    return f"127.0.0.1:{gateway.service.siprec.udp.getHost().port}"


def recording(gateway, guid):
    sessions = [s for s in gateway.service.siprec.server.sessions() if s.guid == guid]
    return sessions[0] if sessions else None


@attrs.frozen
class SippRecording:
    """A call sipp records (C{siprec_call.xml}), held at each of its pauses until L{go_on}."""

    guid: str
    call_id: str
    port: int
    sipp: object
    #: The gateway's recording session.
    session: object

    def go_on(self) -> None:
        go_on(reactor, self.port, self.call_id)


async def sipp_recording(gateway, workdir, customer: bytes) -> SippRecording:
    """
    sipp records a new call, its first m-line to play C{customer} from a
    capture; once the gateway holds the recording session.
    """
    uui, guid = new_ucid()
    call_id = f"siprec-{uuid.uuid4().hex}"
    sipp_port = free_sip_port()
    write_rtp_pcap(workdir / "customer.pcap", RtpSender().packets(customer))
    sipp = run_sipp(reactor, "siprec_call.xml", sip_target(gateway), "-set", "uui", uui,
                    port=sipp_port, call_id=call_id, workdir=workdir)
    await until(reactor, lambda: recording(gateway, guid) is not None or sipp.ended.called)
    session = recording(gateway, guid)
    assert session is not None, sipp.output
    return SippRecording(guid, call_id, sipp_port, sipp, session)


@pytest_twisted.ensureDeferred
async def test_recorded_call_is_transcribed_per_m_line_and_ends_with_bye(gateway, webhook, tmp_path):
    call = await sipp_recording(gateway, tmp_path, read_pcm("customer.wav"))
    guid = call.guid
    assert sorted(call.session.ports) == [0, 1]

    body = {"namespace": NAMESPACE, "guid": guid, "customerId": "TT9833237", "agentId": "RE223444211993",
            "autotranscribeParams": {"language": "ko-KR"},
            "siprecParams": {"mediaLineOrder": "CUSTOMER_FIRST"}}
    code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", body)
    assert code == 200, started
    ids = {role: started["autotranscribeResponse"][role]["streamId"] for role in ("customer", "agent")}

    # sipp plays the first m-line from a capture, in real time; the second
    # comes from the test's own sender.
    customer, agent = read_pcm("customer.wav"), read_pcm("agent.wav")
    call.go_on()
    await send_streams(reactor, [(call.session.ports[1], agent)])
    legs = gateway.service.registry.find(NAMESPACE, guid).legs
    # The capture plays in real time: 9.4 s.
    await until(reactor, lambda: legs["0"].position_bytes == len(customer)
                and legs["1"].position_bytes == len(agent), attempts=3000)
    code, stopped = await gateway.post_json("/mg-autotranscribe/v1/stop-streaming",
                                            {"namespace": NAMESPACE, "guid": guid})
    assert code == 200, stopped
    summaries = {role: stopped["autotranscribeResponse"][role]["summary"] for role in ids}
    assert summaries["customer"]["totalAudioBytes"] == len(customer)
    assert summaries["agent"]["totalAudioBytes"] == len(agent)
    assert summaries["customer"]["transcripts"] >= 2 and summaries["agent"]["transcripts"] >= 1

    expected = summaries["agent"]["transcripts"] + summaries["customer"]["transcripts"]
    await webhook.posts_of_call(guid, expected, ids, {"customer": "TT9833237", "agent": "RE223444211993"})

    # Hold, resume and BYE: sipp checks the answers (a=inactive, then a=recvonly).
    call.go_on()
    assert await call.sipp.ended == 0, call.sipp.output
    await until(reactor, lambda: gateway.service.registry.find(NAMESPACE, guid) is None)
    code, body = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", body)
    assert (code, body["error"]["code"]) == (400, "400-203"), "the call ended with the BYE"
    response = await gateway.get("/conversation/v1/conversation/messages", externalId=guid)
    assert len((await response.json())["items"]) == expected


def sip_tcp_target(gateway) -> str:
    return f"127.0.0.1:{gateway.service.siprec.streams[0].getHost().port}"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("scenario, transport", [
    ("siprec_short.xml", "t1"),
    ("siprec_short.xml", "u1"),
    ("cancel.xml", "u1"),
])
async def test_recording_client_flows_complete_and_the_call_ends_with_them(gateway, tmp_path, scenario, transport):
    uui, guid = new_ucid()
    target = sip_tcp_target(gateway) if transport == "t1" else sip_target(gateway)
    sipp = run_sipp(reactor, scenario, target, "-set", "uui", uui, transport=transport, workdir=tmp_path)
    # sipp checks every answer: two accepted recvonly streams, our +sip.srs Contact.
    assert await sipp.ended == 0, sipp.output
    await until(reactor, lambda: gateway.service.registry.find(NAMESPACE, guid) is None)


@pytest_twisted.ensureDeferred
async def test_options_keep_alive_gets_200(gateway, tmp_path):
    sipp = run_sipp(reactor, "options.xml", sip_target(gateway), workdir=tmp_path)
    assert await sipp.ended == 0, sipp.output


@pytest_twisted.ensureDeferred
async def test_200_ok_is_retransmitted_over_udp_until_the_ack_comes(gateway, tmp_path):
    uui, guid = new_ucid()
    sipp = run_sipp(reactor, "siprec_lost_ack.xml", sip_target(gateway), "-set", "uui", uui, workdir=tmp_path)
    assert await sipp.ended == 0, sipp.output
    # sipp's final screen: the 200 to the INVITE, received once, then retransmitted.
    counts = re.search(r"^\s*200 <-+\s+1\s+(\d+)", sipp.output, re.MULTILINE)
    assert counts and int(counts[1]) >= 1, sipp.output
    await until(reactor, lambda: gateway.service.registry.find(NAMESPACE, guid) is None)


@pytest_twisted.ensureDeferred
async def test_cucm_recordings_with_delayed_offers_form_one_call_one_participant_each(gateway, tmp_path):
    """Cisco CUCM built-in-bridge: two plain INVITEs without SDP, one per party, both with the call's Cisco-Guid."""
    guid = "0648881792-0000065536-{:010d}-0185272330".format(int(uuid.uuid4().int % 10**9))
    server = gateway.service.siprec.server
    server.accept_plain = True  # as [sip] accept_plain_invites = true configures it
    runs = []
    try:
        for leg in ("near", "far"):
            port, call_id = free_sip_port(), f"cucm-{leg}-{uuid.uuid4().hex}"
            runs.append((run_sipp(reactor, "cucm_delayed_offer.xml", sip_target(gateway), "-set", "guid", guid,
                                  port=port, call_id=call_id, workdir=tmp_path), port, call_id))
            await until(reactor, lambda: any(d.call_id == call_id for d in server.uas.dialogs.values())
                        and not next(d for d in server.uas.dialogs.values() if d.call_id == call_id).awaiting_answer)
        sessions = [s for s in server.sessions() if s.guid == guid]
        assert sorted(leg for s in sessions for leg in s.legs.values()) == ["0", "1"]
        assert all(s.receivers[0].codec == "PCMU" for s in sessions), "the ACKs' answers chose PCMU"
        pcm = read_pcm("customer.wav")[: 16000]
        await send_streams(reactor, [(s.ports[0], pcm) for s in sessions])
        call = gateway.service.registry.find(NAMESPACE, guid)
        await until(reactor, lambda: all(call.legs[leg].position_bytes == len(pcm) for leg in ("0", "1")))
        body = {"namespace": NAMESPACE, "guid": guid, "customerId": "c-1", "agentId": "a-1",
                "autotranscribeParams": {"language": "ko-KR"}}
        code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", body)
        assert code == 200, started
        for sipp, port, call_id in runs:
            go_on(reactor, port, call_id)
            assert await sipp.ended == 0, sipp.output
        await until(reactor, lambda: gateway.service.registry.find(NAMESPACE, guid) is None)
    finally:
        server.accept_plain = False
