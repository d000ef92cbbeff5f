"""
The File Exporter end to end: a day of calls through three ingresses (direct
WebSocket API, Twilio Media Streams, SIPREC with sipp; real Korean Vosk) on a
gateway over SQLite and over PostgreSQL, the feed built by C{asapp-mg export},
walked through all seven endpoints, every file downloaded by its signed URL
without API headers and read back equal to the store. Every request and
response is validated against the vendor's C{fileexporter.yml}
(C{tests/fixtures/openapi/}).
"""

from __future__ import annotations

import gzip
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_twisted
import treq
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue

from mgateway.tokens import TokenSigner, signing_key
from mgateway.export import feed
from mgateway.export.ledger import StoreExportLedger
from mgateway.export.service import due_day
from mgateway.ingress.siprec.srs import NAMESPACE as SIPREC
from tests.support.audio import chunks, pace, read_pcm, until
from tests.support.gateway import AUTH, start_gateway
from tests.support.siprec_peer import send_streams
from tests.test_direct_api import START, open_stream
from tests.test_siprec_api import sipp_recording
from tests.test_twilio_api import started_stream

SPEC = OpenAPI.from_file_path(Path(__file__).parent / "fixtures" / "openapi" / "fileexporter.yml")
#: The spec's server: paths are matched under it.
SPEC_HOST = "https://api.sandbox.asapp.com"
STATIC = "/fileexporter/v1/static/"
SENDERS = {"customer": "TT9833237", "agent": "RE223444211993"}


async def exporter_call(gateway, operation: str, body=None, headers=AUTH) -> tuple[int, dict]:
    """POST one File Exporter operation; the request and the response validated against the spec."""
    path = STATIC + operation
    data = b"" if body is None else json.dumps(body).encode()
    response = await gateway.post(path, raw=data, headers=headers)
    answer = await response.content()
    request = MockRequest(SPEC_HOST, "post", path, data=data, headers={**AUTH, **headers},
                          content_type="application/json" if body is not None else None)
    if headers == AUTH and response.code == 200:
        SPEC.validate_request(request)
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    SPEC.validate_response(request, MockResponse(answer, status_code=response.code,
                                                 content_type="application/json"))
    return response.code, json.loads(answer)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request) -> str:
    if request.param == "sqlite":
        return ""
    dsn = request.getfixturevalue("fresh_postgres_dsn")
    return f'\n[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n'


@pytest_twisted.async_yield_fixture
async def exporting_gateway(store_config, tmp_path):
    running = await start_gateway(reactor, tmp_path, "\n[exporter]\nenabled = true\n" + store_config)
    yield running
    await running.service.stopService()


# -- a call through each ingress ------------------------------------------------------


async def start(gateway, namespace, guid, **params) -> dict:
    code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", {
        "namespace": namespace, "guid": guid, "customerId": SENDERS["customer"],
        "agentId": SENDERS["agent"], "autotranscribeParams": {"language": "ko-KR"}, **params})
    assert code == 200, started
    return {role: s["streamId"] for role, s in started["autotranscribeResponse"].items()}


async def stop(gateway, namespace, guid) -> int:
    code, stopped = await gateway.post_json("/mg-autotranscribe/v1/stop-streaming",
                                            {"namespace": namespace, "guid": guid})
    assert code == 200, stopped
    return sum(s["summary"]["transcripts"] for s in stopped["autotranscribeResponse"].values())


async def direct_call(gateway) -> tuple[str, int]:
    client, factory = await open_stream(gateway, "conv-export-direct")
    client.send_json(START)
    assert (await client.next_message())["message"] == "startResponse"
    await pace(reactor, chunks(read_pcm("customer.wav")), client.send_audio)
    client.send_json({"message": "finishStream"})
    while (message := await client.next_message())["message"] == "transcript":
        pass
    await factory.closed
    return "conv-export-direct", message["summary"]["transcripts"]


async def twilio_call(gateway) -> tuple[str, int]:
    sid, peer, client, factory = await started_stream(gateway)
    await start(gateway, "twilio", sid, twilioParams={"trackMap": {"inbound": "agent", "outbound": "customer"}})
    tracks = {"inbound": read_pcm("agent.wav"), "outbound": read_pcm("customer.wav")}
    await pace(reactor, peer.media_frames(tracks), client.send_text)
    legs = gateway.service.registry.find("twilio", sid).legs
    await until(reactor, lambda: all(legs[t].position_bytes >= len(pcm) for t, pcm in tracks.items()))
    transcripts = await stop(gateway, "twilio", sid)
    client.send_text(peer.stop())
    await factory.closed
    return sid, transcripts


async def siprec_call(gateway, workdir: Path) -> tuple[str, int]:
    customer, agent = read_pcm("customer.wav"), read_pcm("agent.wav")
    call = await sipp_recording(gateway, workdir, customer)
    guid = call.guid
    await start(gateway, SIPREC, guid, siprecParams={"mediaLineOrder": "CUSTOMER_FIRST"})
    call.go_on()
    await send_streams(reactor, [(call.session.ports[1], agent)])
    legs = gateway.service.registry.find(SIPREC, guid).legs
    await until(reactor, lambda: legs["0"].position_bytes == len(customer)
                and legs["1"].position_bytes == len(agent), attempts=3000)
    transcripts = await stop(gateway, SIPREC, guid)
    call.go_on()
    assert await call.sipp.ended == 0, call.sipp.output
    return guid, transcripts


async def run_export(config: Path, first: str, last: str) -> list[str]:
    """C{asapp-mg export}, as an operator runs it next to the gateway."""
    out, err, status = await getProcessOutputAndValue(sys.executable, [
        "-c", "import sys; from mgateway.cli import main; sys.exit(main())",
        "export", "--config", str(config), "--from", first, "--to", last])
    assert status == 0, err.decode()
    assert err.decode().startswith(f"{len(out.splitlines())} files for {first} to {last}"), err
    return out.decode().splitlines()


# -- the walk ---------------------------------------------------------------------------


async def walk(gateway, format: str) -> dict[str, str]:
    """Every file of the feed in C{format}: name -> signed URL, through the seven endpoints."""
    code, body = await exporter_call(gateway, "listfeeds")
    assert (code, body) == (200, {"feeds": ["utterances"]})
    code, body = await exporter_call(gateway, "listfeedversions", {"feed": "utterances"})
    assert (code, body) == (200, {"feed": "utterances", "versions": ["1"]})
    selected = {"feed": "utterances", "version": "1"}
    code, body = await exporter_call(gateway, "listfeedformats", selected)
    assert (code, body) == (200, {**selected, "formats": ["jsonl", "csv"]})
    selected["format"] = format
    code, body = await exporter_call(gateway, "listfeeddates", selected)
    assert code == 200 and set(body) == {*selected, "dates"}, body
    urls = {}
    for day in body["dates"]:
        code, body = await exporter_call(gateway, "listfeedintervals", {**selected, "date": day})
        assert code == 200 and body["date"] == day and body["intervals"], body
        for interval in body["intervals"]:
            chosen = {**selected, "date": day, "interval": interval}
            code, body = await exporter_call(gateway, "listfeedfiles", chosen)
            assert (code, body) == (200, {**chosen, "files": [
                f"utterances_{day}_{interval.removeprefix('hr=')}.{format}.gz"]}), body
            for name in body["files"]:
                code, body = await exporter_call(gateway, "getfeedfile", {**chosen, "fileName": name})
                assert code == 200 and body == {**chosen, "fileName": name, "url": body["url"]}, body
                urls[name] = body["url"]
    return urls


@pytest_twisted.ensureDeferred
async def test_a_day_of_calls_exported_listed_and_downloaded_equals_the_store(exporting_gateway, tmp_path):
    gateway = exporting_gateway
    first_day = datetime.now(timezone.utc).date()
    # exporter.enabled: at start-up the gateway built the day due, empty.
    daily = gateway.service.exports
    await daily.last_run
    due = due_day(datetime.now(timezone.utc), gateway.service.config.exporter.build_hour)
    assert await StoreExportLedger(gateway.service.store).state(feed.FEED, due) == ("done", daily.node)
    calls = {
        "direct": await direct_call(gateway),
        "twilio": await twilio_call(gateway),
        SIPREC: await siprec_call(gateway, tmp_path),
    }
    last_day = datetime.now(timezone.utc).date()

    written = await run_export(tmp_path / "asapp-mg.toml", first_day.isoformat(), last_day.isoformat())
    assert written and all(Path(p).is_file() for p in written), written

    start = feed.day_start(first_day)
    stored = await StoreExportLedger(gateway.service.store).messages_created(
        start, feed.day_start(last_day) + timedelta(days=1))
    expected = [feed.row(m) for m in stored]
    assert sorted({(r["namespace"], r["external_conversation_id"]) for r in expected}) == sorted(
        (namespace, guid) for namespace, (guid, _) in calls.items())
    for namespace, (guid, transcripts) in calls.items():
        rows = [r for r in expected if r["external_conversation_id"] == guid]
        assert len(rows) == transcripts >= 2, (namespace, rows)
        assert {r["language"] for r in rows} == {"ko-KR"}
        response = await gateway.get("/conversation/v1/conversation/messages", externalId=guid)
        # The after-call endpoint orders by time spoken, the feed by time created.
        assert sorted(r["text"] for r in rows) == sorted(i["text"] for i in (await response.json())["items"])

    for format in feed.FORMATS:
        urls = await walk(gateway, format)
        assert len(urls) == len({(r["dt"], r["hr"]) for r in expected})
        downloaded = []
        for name, url in sorted(urls.items()):
            assert url.startswith(gateway.base + "/fileexporter/v1/files/") and url.endswith("/" + name)
            response = await treq.get(url)  # no API headers: the URL is the credential
            assert response.code == 200, await response.text()
            assert response.headers.getRawHeaders("content-type") == ["application/gzip"]
            # treq undoes a Content-Encoding: gzip; the bytes are still a gzip
            # file only if the gateway did not label the file as one.
            downloaded += feed.decode(gzip.decompress(await response.content()), format)
        if format == "csv":
            expected = [{k: (None if v == "" else v) for k, v in r.items()} for r in expected]
        assert downloaded == expected


# -- refusals and errors, on the suite's gateway -------------------------------------


@pytest.fixture
def exported_file(gateway):
    """One file of the 30th of November 2026 in the session gateway's feed."""
    root = gateway.service.config.exporter.directory
    path = feed.Partition("jsonl", datetime(2026, 11, 30).date(), 13).path(root)
    feed.write_atomically(path, b'{"text": "x"}\n')
    yield path
    path.unlink()


def file_request(**changes) -> dict:
    return {"feed": "utterances", "version": "1", "format": "jsonl", "date": "2026-11-30",
            "interval": "hr=13", "fileName": "utterances_2026-11-30_13.jsonl.gz", **changes}


@pytest_twisted.ensureDeferred
async def test_an_expired_forged_or_foreign_url_is_refused(gateway, exported_file):
    code, body = await exporter_call(gateway, "getfeedfile", file_request())
    assert code == 200
    url = body["url"]
    assert (await treq.get(url)).code == 200
    token = url.split("/")[-2]
    config = gateway.service.config
    key = signing_key(config.auth.token_secret, config.gateway.data_dir)
    clock = Clock()
    clock.advance(datetime.now(timezone.utc).timestamp() - config.exporter.url_ttl_seconds - 1)
    expired = TokenSigner(key, config.exporter.url_ttl_seconds, clock).issue(
        "fileexporter", "test-app", file=exported_file.relative_to(config.exporter.directory).as_posix())
    streaming = gateway.service.tokens.issue("direct", "test-app")
    for bad in (expired, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), streaming):
        response = await treq.get(url.replace(token, bad))
        assert response.code == 403, bad
        error = (await response.json())["error"]
        assert error["code"] == "403-01" and error["requestId"], error
    response = await treq.get(url.rsplit("/", 1)[0] + "/another.jsonl.gz")
    assert response.code == 403, "a token opens only the file it names"


@pytest_twisted.ensureDeferred
async def test_without_an_interval_every_file_of_the_date_is_listed_and_fetched(gateway, exported_file):
    other = exported_file.parent.parent / "hr=14" / "utterances_2026-11-30_14.jsonl.gz"
    feed.write_atomically(other, b"{}\n")
    try:
        body = file_request()
        del body["interval"], body["fileName"]
        code, answer = await exporter_call(gateway, "listfeedfiles", body)
        assert (code, answer) == (200, {**body, "files": [exported_file.name, other.name]}), answer
        code, answer = await exporter_call(gateway, "getfeedfile", {**body, "fileName": other.name})
        assert code == 200 and "interval" not in answer, answer
        response = await treq.get(answer["url"])
        assert gzip.decompress(await response.content()) == b"{}\n"
        other.unlink()
        response = await treq.get(answer["url"])
        assert response.code == 404, "a file deleted since the URL was issued"
        assert (await response.json())["error"]["code"] == "404-01"
    finally:
        other.unlink(missing_ok=True)


@pytest_twisted.ensureDeferred
async def test_hive_style_values_are_accepted_and_echoed(gateway, exported_file):
    body = file_request(version="version=1", format="format=jsonl", date="dt=2026-11-30")
    code, answer = await exporter_call(gateway, "getfeedfile", body)
    assert code == 200 and {k: answer[k] for k in body} == body, answer
    code, answer = await exporter_call(gateway, "listfeeddates", {"feed": "utterances", "version": "1",
                                                                  "format": "format=jsonl"})
    assert "2026-11-30" in answer["dates"], answer


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("operation, body, status, fragment", [
    ("listfeedversions", {"feed": "staging_utterance_state"}, 404, "Feed not found"),
    ("listfeedversions", None, 400, "JSON object"),
    ("listfeedversions", {}, 400, "feed is required"),
    ("listfeedformats", {"feed": "utterances", "version": "2"}, 404, "Version not found"),
    ("listfeeddates", {"feed": "utterances", "version": "1", "format": "parquet"}, 404, "Format not found"),
    ("listfeedintervals", {"feed": "utterances", "version": "1", "format": "jsonl", "date": "30/11/2026"},
     400, "YYYY-MM-DD"),
    ("listfeedintervals", {"feed": "utterances", "version": "1", "format": "jsonl", "date": "2001-01-01"},
     404, "No files for date"),
    ("listfeedfiles", file_request(interval="hr=02"), 404, "No files for interval"),
    ("listfeedfiles", file_request(interval="../../.."), 400, "hr=HH"),
    ("getfeedfile", file_request(fileName="../../../../token-signing.key"), 404, "File not found"),
    ("getfeedfile", file_request(fileName=None), 400, "fileName is required"),
    ("nosuchoperation", {}, 404, "Not Found"),
])
async def test_bad_requests_get_the_spec_error_body(gateway, exported_file, operation, body, status, fragment):
    response = await gateway.post(STATIC + operation, body)
    answer = await response.json()
    assert response.code == status, answer
    assert set(answer) == {"error"} and fragment in answer["error"]["message"], answer
    assert answer["error"]["code"] == f"{status}-01" and answer["error"]["requestId"]
    if operation != "nosuchoperation":
        await exporter_call(gateway, operation, body)  # validates the error body against the spec


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("operation", ["listfeeds", "listfeedversions", "getfeedfile"])
async def test_every_endpoint_requires_the_api_key(gateway, operation):
    response = await gateway.post(STATIC + operation, {"feed": "utterances"}, headers={})
    assert response.code == 401
    assert (await response.json())["error"]["code"] == "401-01"
