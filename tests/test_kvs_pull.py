"""
Pulling a contact's audio from the local KVS endpoint (tests/support/kvs_endpoint.py,
which checks every request's SigV4 signature with botocore): resume without
gap or duplicate after a cut or a stall, errors, throttling, contact switch.
"""

import datetime

import pytest
import pytest_twisted
from botocore.credentials import Credentials, RefreshableCredentials
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock

from mgateway.ingress.kvs.client import KvsClient, KvsError, stream_region
from mgateway.ingress.kvs.pull import ContactPull
from tests.conftest import wait
from tests.support.audio import read_pcm, until
from tests.support.connect_mkv import contact_fragments, error_fragment
from tests.support.kvs_endpoint import (
    ACCESS_KEY, SECRET_KEY, Cut, ErrorTag, FakeStream, JsonError, Stall, start_local_kvs, stream_arn,
)

CONTACT = "8c259fea-8764-4a92-adc4-73572e9cf016"
OTHER = "0b7c2f5e-1111-4a92-adc4-73572e9cf017"


class Legs:
    """What a call's MediaAttachment gets from the pull."""

    def __init__(self):
        self.pcm = {"AUDIO_FROM_CUSTOMER": b"", "AUDIO_TO_CUSTOMER": b""}
        self.ended = None

    def audio(self, leg, pcm):
        self.pcm[leg] += pcm


@pytest.fixture
def kvs():
    resource, port = wait(start_local_kvs(reactor))
    yield resource
    wait(port.stopListening())


@pytest.fixture
def speech():
    return read_pcm("customer.wav"), read_pcm("agent.wav")


def make_pull(kvs, name, credentials=None, source=None, **kwargs):
    """A pull of stream C{name}; C{source}: app id -> credentials (default: the endpoint's key)."""
    source = source or (lambda app: credentials or Credentials(ACCESS_KEY, SECRET_KEY))
    client = KvsClient(reactor, source, endpoint_url=kvs.base_url)
    legs = Legs()
    pull = ContactPull(client=client, clock=reactor, guid=CONTACT, app_id="app", arn=stream_arn(name),
                       attachment=legs, on_end=lambda p, reason: setattr(legs, "ended", reason),
                       backoff_base=0.01, backoff_cap=0.05, stall_seconds=0.5, **kwargs)
    return pull, legs


def add_stream(kvs, name, speech, **kwargs):
    fragments = contact_fragments(CONTACT, *speech)
    kvs.streams[stream_arn(name)] = FakeStream(list(fragments), **kwargs)
    return fragments


def whole(fragments):
    return {"AUDIO_FROM_CUSTOMER": b"".join(f.customer_pcm for f in fragments),
            "AUDIO_TO_CUSTOMER": b"".join(f.agent_pcm for f in fragments)}


def media_requests(kvs):
    return [r for r in kvs.requests if r["path"] == "/getMedia"]


async def pulled(pull, legs, fragments, start="NOW"):
    pull.start(start, None)
    await until(reactor, lambda: pull.media.last_fragment == fragments[-1].number, attempts=1000)
    await pull.stop()
    return legs.pcm


@pytest_twisted.ensureDeferred
async def test_whole_stream_is_pulled_signed_and_resumed_when_it_ends(kvs, speech):
    fragments = add_stream(kvs, "plain", speech)
    pull, legs = make_pull(kvs, "plain")
    assert await pulled(pull, legs, fragments) == whole(fragments)
    assert all(r["signature"] is None for r in kvs.requests)
    assert media_requests(kvs)[0]["body"]["StartSelector"] == {"StartSelectorType": "NOW"}


@pytest.mark.parametrize("failure", [Cut(50_000), Cut(34_000), Stall(60_000)], ids=repr)
@pytest_twisted.ensureDeferred
async def test_a_cut_or_stall_mid_fragment_resumes_without_gap_or_duplicate(kvs, speech, failure):
    fragments = add_stream(kvs, "cut", speech, failures=[failure])
    pull, legs = make_pull(kvs, "cut")
    assert await pulled(pull, legs, fragments) == whole(fragments)
    second = media_requests(kvs)[1]["body"]["StartSelector"]
    ends = [sum(len(f.data) for f in fragments[: i + 1]) for i in range(len(fragments))]
    complete = [f for f, end in zip(fragments, ends) if end <= failure.after_bytes]
    if complete:
        assert second == {"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": complete[-1].number}
    else:  # cut inside the first fragment: the same start again, its replay skipped
        assert second == {"StartSelectorType": "NOW"}


@pytest_twisted.ensureDeferred
async def test_fragment_number_start_and_json_errors_with_backoff(kvs, speech):
    fragments = add_stream(kvs, "errors", speech, failures=[
        JsonError(400, "ConnectionLimitExceededException"), JsonError(400, "ClientLimitExceededException"),
        JsonError(500, "InternalFailure")])
    pull, legs = make_pull(kvs, "errors")
    pull.start("FRAGMENT_NUMBER", fragments[1].number)
    await until(reactor, lambda: pull.media.last_fragment == fragments[-1].number, attempts=1000)
    await pull.stop()
    assert legs.pcm == whole(fragments[2:])
    selectors = [r["body"]["StartSelector"] for r in media_requests(kvs)]
    assert selectors[:4] == [{"StartSelectorType": "FRAGMENT_NUMBER",
                              "AfterFragmentNumber": fragments[1].number}] * 4


@pytest_twisted.ensureDeferred
async def test_error_tags_resume_and_contact_switch_ends_the_call(kvs, speech):
    fragments = add_stream(kvs, "switch", speech, failures=[ErrorTag(error_fragment("INTERNAL_ERROR", 5000), 2)])
    others = contact_fragments(OTHER, *speech, first=int(fragments[-1].number) + 1000)
    kvs.streams[stream_arn("switch")].fragments += others[:2]
    pull, legs = make_pull(kvs, "switch")
    pull.start("NOW", None)
    await until(reactor, lambda: legs.ended is not None, attempts=1000)
    assert legs.ended == "the contact ended"
    assert legs.pcm == whole(fragments)
    assert media_requests(kvs)[1]["body"]["StartSelector"]["ContinuationToken"] == fragments[1].number


@pytest_twisted.ensureDeferred
async def test_unreadable_stream_ends_the_call_with_the_reason(kvs, speech):
    pull, legs = make_pull(kvs, "missing")
    pull.start("NOW", None)
    await until(reactor, lambda: legs.ended is not None)
    assert "ResourceNotFoundException" in legs.ended


@pytest_twisted.ensureDeferred
async def test_expiring_credentials_are_refreshed_before_signing(kvs, speech):
    fragments = add_stream(kvs, "creds", speech[:1] + (b"",))
    kvs.secrets["AKIDFRESH"] = (SECRET_KEY, "fresh-token")
    kvs.expired.add(ACCESS_KEY)
    now = datetime.datetime.now(datetime.timezone.utc)
    credentials = RefreshableCredentials(
        ACCESS_KEY, SECRET_KEY, "old-token", now + datetime.timedelta(seconds=30),
        refresh_using=lambda: {"access_key": "AKIDFRESH", "secret_key": SECRET_KEY, "token": "fresh-token",
                               "expiry_time": (now + datetime.timedelta(hours=1)).isoformat()},
        method="test")
    pull, legs = make_pull(kvs, "creds", credentials)
    assert (await pulled(pull, legs, fragments))["AUDIO_FROM_CUSTOMER"] == whole(fragments)["AUDIO_FROM_CUSTOMER"]
    assert {r["signature"] for r in kvs.requests} == {None}


@pytest_twisted.ensureDeferred
async def test_a_bad_signature_is_refused_by_the_endpoint(kvs, speech):
    add_stream(kvs, "forged", speech)
    client = KvsClient(reactor, lambda app: Credentials(ACCESS_KEY, "wrong-secret"), endpoint_url=kvs.base_url)
    with pytest.raises(KvsError) as error:
        await client.data_endpoint("app", stream_arn("forged"))
    assert (error.value.status, error.value.type) == (403, "InvalidSignatureException")


def test_stream_arns():
    assert stream_region(stream_arn("x")) == "us-east-1"
    assert stream_region("arn:aws:kinesisvideo:us-east-1:145051540001:stream/s/1696422764859TBD") is None
    assert stream_region("not an arn") is None


@pytest_twisted.ensureDeferred
async def test_an_apps_role_is_assumed_with_its_external_id(kvs, speech):
    import botocore.session

    from mgateway.ingress.kvs.credentials import AssumedRole, CredentialSource

    def session():
        made = botocore.session.Session()
        made.set_credentials(ACCESS_KEY, SECRET_KEY)
        return made

    role = "arn:aws:iam::145051540001:role/kinesis-connect-access-role-for-asapp"
    source = CredentialSource({"app": AssumedRole(role, "ext-123")}, region="us-east-1",
                              sts_endpoint_url=kvs.base_url, session_factory=session)
    fragments = add_stream(kvs, "role", speech)
    pull, legs = make_pull(kvs, "role", source=source)
    assert await pulled(pull, legs, fragments) == whole(fragments)
    sts = [r for r in kvs.requests if r["path"] == "/"]
    assert len(sts) == 1 and sts[0]["signature"] is None
    assert (sts[0]["body"]["RoleArn"], sts[0]["body"]["ExternalId"]) == (role, "ext-123")
    kvs_keys = {r["key"] for r in kvs.requests if r["path"] != "/"}
    assert kvs_keys == {"ASIA0000000000000001"} and all(r["signature"] is None for r in kvs.requests)


class ScriptedBody:
    """A GetMedia response the test writes into and ends."""

    def __init__(self, on_data):
        self.on_data = on_data
        self.done = Deferred()
        self.aborted = False

    def abort(self):
        self.aborted = True
        if not self.done.called:
            self.done.errback(ConnectionLost())


class ScriptedClient:
    def __init__(self):
        self.responses = []

    async def get_media(self, app_id, arn, selector, on_data):
        self.responses.append((selector, ScriptedBody(on_data)))
        return self.responses[-1][1]


def clocked_pull(**kwargs):
    clock, client, legs = Clock(), ScriptedClient(), Legs()
    pull = ContactPull(client=client, clock=clock, guid=CONTACT, app_id="app", arn=stream_arn("c"),
                       attachment=legs, on_end=lambda p, reason: setattr(legs, "ended", reason),
                       random=lambda: 1.0, **kwargs)
    return pull, clock, client, legs


def test_a_stall_is_timed_on_the_clock_and_resumed_from_the_token(speech):
    fragments = contact_fragments(CONTACT, *speech)
    pull, clock, client, legs = clocked_pull(stall_seconds=3, backoff_base=0.2)
    pull.start("NOW", None)
    body = client.responses[0][1]
    body.on_data(fragments[0].data + fragments[1].data[:5000])
    clock.advance(2.9)
    body.on_data(fragments[1].data[5000:6000])
    clock.advance(2.9)
    assert not body.aborted, "every byte restarts the stall timer"
    clock.advance(0.2)
    assert body.aborted and len(client.responses) == 1
    clock.advance(0.2)  # progress was made: the shortest back-off
    assert client.responses[1][0] == {"StartSelectorType": "CONTINUATION_TOKEN",
                                      "ContinuationToken": fragments[0].number}


def test_backoff_doubles_to_its_cap_and_errors_end_the_call(speech):
    pull, clock, client, legs = clocked_pull(backoff_base=0.2, backoff_cap=1.0, max_failures=5)
    pull.start("NOW", None)
    waits = []
    for attempt in range(5):
        client.responses[-1][1].abort()
        if legs.ended is not None:
            break
        (sleep,) = clock.getDelayedCalls()
        waits.append(round(sleep.getTime() - clock.seconds(), 6))
        clock.advance(waits[-1])
    # random() is 1: the delays are the bounds themselves, 0.4, 0.8, then the 1 s cap.
    assert waits == [0.4, 0.8, 1.0, 1.0] and legs.ended.startswith("the stream cannot be read")


def test_a_kms_error_tag_ends_the_call(speech):
    pull, clock, client, legs = clocked_pull()
    pull.start("NOW", None)
    client.responses[0][1].on_data(error_fragment("KMS_KEY_DISABLED", 4501))
    client.responses[0][1].done.callback(None)  # GetMedia ends after its error tags
    assert legs.ended == "KVS reported KMS_KEY_DISABLED (4501)"
