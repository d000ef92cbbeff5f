"""
Amazon Connect end to end: start-streaming names a Kinesis video stream served
by the local KVS endpoint (tests/support/kvs_endpoint.py: SigV4 checked with
botocore, chunked in random-size writes); the gateway pulls both tracks of
Connect-shaped MKV built from the speech fixtures, real Vosk transcribes them,
transcripts reach the HTTPS webhook and the after-call endpoint with the
Connect ContactId as externalConversationId. A connection cut mid-call is
resumed with no gap and no duplicate.
"""

import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.conftest import wait
from tests.support.audio import read_pcm, until
from tests.support.connect_mkv import FIRST_FRAGMENT, contact_fragments
from tests.support.gateway import start_gateway
from tests.support.kvs_endpoint import ACCESS_KEY, SECRET_KEY, Cut, FakeStream, start_local_kvs, stream_arn
from tests.support.speech import speech_spans

START = "/mg-autotranscribe/v1/start-streaming"
STOP = "/mg-autotranscribe/v1/stop-streaming"
SENDERS = {"customer": "TT9833237", "agent": "RE223444211993"}


@pytest.fixture(scope="module")
def connect(tmp_path_factory, webhook_target, tls_files):
    """A gateway whose [amazonconnect] endpoint is the local KVS, credentials from the environment."""
    kvs, port = wait(start_local_kvs(reactor))
    _, url = webhook_target
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        directory = tmp_path_factory.mktemp("connect")
        env.setenv("AWS_CONFIG_FILE", str(directory / "no-aws-config"))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(directory / "no-aws-credentials"))
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        gateway = wait(start_gateway(reactor, directory, f"""
[webhook]
url = "{url}/hook"
ca_file = "{tls_files.ca_cert}"

[amazonconnect]
endpoint_url = "{kvs.base_url}"
stall_seconds = 1
backoff_base_seconds = 0.05
backoff_max_seconds = 0.5
"""))
        yield gateway, kvs
        wait(gateway.service.stopService())
    wait(port.stopListening())


def start_body(guid, arn, selector="NOW", **params):
    return {"namespace": "amazonconnect", "guid": guid, **{k + "Id": v for k, v in
            (("customer", SENDERS["customer"]), ("agent", SENDERS["agent"]))},
            "autotranscribeParams": {"language": "ko-KR"},
            "amazonConnectParams": {"streamArn": arn, "startSelectorType": selector, **params}}


async def pull_until(gateway, guid, number):
    source = gateway.service.amazonconnect
    await until(reactor, lambda: source.pull(guid).media.last_fragment == number, attempts=3000)


def check_times(posts, pcm_by_role):
    """Each utterance lies on a stretch of speech of its own track, none twice, in order."""
    for role, pcm in pcm_by_role.items():
        spans = speech_spans(pcm)
        mine = [p.body["autotranscribeResponse"] for p in posts if p.body["sender"]["role"] == role]
        times = [(m["start"], m["end"]) for m in mine]
        assert times == sorted(times) and len(set(times)) == len(times), times
        for start, end in times:
            assert any(s - 400 <= start and end <= e + 400 for s, e in spans), (role, start, end, spans)


@pytest_twisted.ensureDeferred
async def test_connect_call_pulled_transcribed_cut_resumed_stopped_and_resumed(connect, webhook):
    gateway, kvs = connect
    guid = str(uuid.uuid4())
    customer, agent = read_pcm("customer.wav"), read_pcm("agent.wav")
    fragments = contact_fragments(guid, customer, agent)
    cut_at = sum(len(f.data) for f in fragments[:3]) + 20_000  # inside the fourth fragment
    arn = stream_arn("connect-" + guid[:8])
    kvs.streams[arn] = FakeStream(list(fragments), failures=[Cut(cut_at)], fragment_interval=0.02)

    code, started = await gateway.post_json(START, start_body(guid, arn))
    assert code == 200, started
    ids = {role: started["autotranscribeResponse"][role]["streamId"] for role in SENDERS}
    await pull_until(gateway, guid, fragments[-1].number)
    code, stopped = await gateway.post_json(STOP, {"namespace": "amazonconnect", "guid": guid})
    assert code == 200, stopped
    summaries = {role: stopped["autotranscribeResponse"][role]["summary"] for role in SENDERS}
    # Every byte of both tracks once: the cut fragment was neither lost nor repeated.
    assert summaries["customer"]["totalAudioBytes"] == len(customer)
    assert summaries["agent"]["totalAudioBytes"] == len(agent)
    assert summaries["customer"]["transcripts"] >= 2 and summaries["agent"]["transcripts"] >= 1
    selectors = [r["body"]["StartSelector"] for r in kvs.requests
                 if r["path"] == "/getMedia" and r["body"]["StreamARN"] == arn]
    assert selectors[:2] == [{"StartSelectorType": "NOW"},
                             {"StartSelectorType": "CONTINUATION_TOKEN",
                              "ContinuationToken": fragments[2].number}]
    assert all(r["signature"] is None for r in kvs.requests)

    expected = summaries["customer"]["transcripts"] + summaries["agent"]["transcripts"]
    posts = await webhook.posts_of_call(guid, expected, ids, SENDERS)
    assert len(posts) == expected
    check_times(posts, {"customer": customer, "agent": agent})
    response = await gateway.get("/conversation/v1/conversation/messages", externalId=guid)
    assert len((await response.json())["items"]) == expected

    metrics = (await (await gateway.get("/metrics", headers={})).text())
    assert f'asapp_mg_kvs_resumes_total{{guid="{guid}"}}' in metrics
    assert f'asapp_mg_kvs_fragments_total{{guid="{guid}"}} {float(len(fragments))}' in metrics

    # While stopped the contact goes on; a start "from where we stopped" pulls only that.
    more = contact_fragments(guid, read_pcm("single.wav"), b"", first=int(fragments[-1].number) + 1000)
    kvs.streams[arn].fragments += more
    code, restarted = await gateway.post_json(START, start_body(guid, arn, "FRAGMENT_NUMBER"))
    assert code == 200, restarted
    assert {role: restarted["autotranscribeResponse"][role]["streamId"] for role in SENDERS} == ids
    await pull_until(gateway, guid, more[-1].number)
    code, stopped = await gateway.post_json(STOP, {"namespace": "amazonconnect", "guid": guid})
    assert stopped["autotranscribeResponse"]["customer"]["summary"]["totalAudioBytes"] == len(read_pcm("single.wav"))
    assert stopped["autotranscribeResponse"]["agent"]["summary"]["totalAudioBytes"] == 0


@pytest.mark.parametrize("params, code, text", [
    ({"streamArn": "arn:aws:kinesisvideo:us-east-1:1:stream/x/123TBD"}, "400-201", "not a Kinesis Video stream"),
    ({}, "400-201", "streamArn is required"),
    ({"streamArn": stream_arn("x"), "startSelectorType": "FRAGMENT_NUMBER"}, "400-201", "afterFragmentNumber"),
    ({"streamArn": stream_arn("x"), "afterFragmentNumber": "12a"}, "400-201", "afterFragmentNumber"),
    ({"streamArn": stream_arn("no-such-stream")}, "500-201", "ResourceNotFoundException"),
])
@pytest_twisted.ensureDeferred
async def test_start_errors_are_the_specs(connect, params, code, text):
    gateway, _ = connect
    guid = str(uuid.uuid4())
    body = start_body(guid, None)
    body["amazonConnectParams"] = params
    status, answer = await gateway.post_json(START, body)
    assert (status, answer["error"]["code"]) == (int(code[:3]), code)
    assert text in answer["error"]["message"]
    assert gateway.service.registry.find("amazonconnect", guid) is None
    status, answer = await gateway.post_json(STOP, {"namespace": "amazonconnect", "guid": guid})
    assert answer["error"]["code"] == "400-203"


@pytest_twisted.ensureDeferred
async def test_fragment_number_start_pulls_after_it(connect):
    gateway, kvs = connect
    guid = str(uuid.uuid4())
    customer = read_pcm("single.wav")
    fragments = contact_fragments(guid, customer, customer, first=FIRST_FRAGMENT + 7)
    arn = stream_arn("after-" + guid[:8])
    kvs.streams[arn] = FakeStream(list(fragments), now_index=len(fragments))
    code, _ = await gateway.post_json(START, start_body(guid, arn, "FRAGMENT_NUMBER",
                                                        afterFragmentNumber=fragments[0].number))
    assert code == 200
    await pull_until(gateway, guid, fragments[-1].number)
    code, stopped = await gateway.post_json(STOP, {"namespace": "amazonconnect", "guid": guid})
    summary = stopped["autotranscribeResponse"]["customer"]["summary"]
    assert summary["totalAudioBytes"] == len(customer) - len(fragments[0].customer_pcm)


@pytest_twisted.ensureDeferred
async def test_the_next_contact_on_the_stream_ends_the_call(connect, webhook):
    gateway, kvs = connect
    guid, other = str(uuid.uuid4()), str(uuid.uuid4())
    pcm = read_pcm("single.wav")
    ours = contact_fragments(guid, pcm, pcm)
    theirs = contact_fragments(other, pcm, pcm, first=int(ours[-1].number) + 1000)
    arn = stream_arn("reused-" + guid[:8])
    kvs.streams[arn] = FakeStream(theirs[:1] + ours + theirs)  # the previous contact's tail, ours, the next
    code, started = await gateway.post_json(START, start_body(guid, arn))
    assert code == 200
    await until(reactor, lambda: gateway.service.registry.find("amazonconnect", guid) is None, attempts=3000)
    # The call was flushed: single.wav's one utterance only comes with the flush.
    ids = {role: started["autotranscribeResponse"][role]["streamId"] for role in SENDERS}
    posts = await webhook.posts_of_call(guid, 2, ids, SENDERS)
    assert {p.body["sender"]["role"] for p in posts} == {"customer", "agent"}
    code, answer = await gateway.post_json(STOP, {"namespace": "amazonconnect", "guid": guid})
    assert answer["error"]["code"] == "400-203"
