"""
A local Kinesis Video Streams endpoint: GetDataEndpoint and GetMedia as the
KVS API reference describes them, over loopback.

Every request's SigV4 signature is recomputed with botocore's own signer
from the known secret and compared; a bad one is refused as AWS does (403,
C{x-amzn-ErrorType}). GetMedia streams the stream's fragments with chunked
encoding in random-size writes. Failure modes are queued per stream and
consumed one per GetMedia request.
"""

from __future__ import annotations

import datetime
import hmac
import json
import random
import re
from urllib.parse import parse_qs

import attrs
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.internet import endpoints
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

ACCESS_KEY = "AKIDEXAMPLELOCALKVS1"
SECRET_KEY = "local-kvs-secret-key-for-tests-only"
REGION = "us-east-1"
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})")


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesisvideo:{REGION}:123456789012:stream/{name}/1696422764859"


@attrs.define
class Cut:
    """Drop the connection after this many body bytes."""
    after_bytes: int


@attrs.define
class Stall:
    """Stop writing (the connection stays open) after this many body bytes."""
    after_bytes: int


@attrs.define
class JsonError:
    status: int
    type: str
    message: str = "local endpoint error"


@attrs.define
class ErrorTag:
    """Send this fragment (error tags) after this many whole fragments, then end."""
    data: bytes
    after_fragments: int = 0


@attrs.define
class FakeStream:
    fragments: list  #: of tests.support.connect_mkv.Fragment, or (number, bytes)
    now_index: int = 0  #: where NOW starts
    failures: list = attrs.Factory(list)
    #: seconds between fragments (live pacing); 0: as fast as the link goes
    fragment_interval: float = 0.0

    def index_after(self, number: str) -> int:
        numbers = [f.number for f in self.fragments]
        return numbers.index(number) + 1 if number in numbers else len(numbers)


class LocalKvs(Resource):
    isLeaf = True

    def __init__(self, reactor, seed: int = 7):
        super().__init__()
        self.reactor = reactor
        self.streams: dict[str, FakeStream] = {}
        self.secrets = {ACCESS_KEY: (SECRET_KEY, None)}
        self.expired: set[str] = set()
        self.requests: list[dict] = []
        self.base_url = ""
        self.random = random.Random(seed)

    # -- signature ---------------------------------------------------------

    def _verify(self, request, body: bytes, expected_service: str) -> str | None:
        """None when the signature is botocore's for our secret, else the error type."""
        match = _AUTH.fullmatch(request.getHeader("authorization") or "")
        if match is None:
            return "MissingAuthenticationTokenException"
        key, _, region, service, signed, signature = match.groups()
        if key not in self.secrets:
            return "UnrecognizedClientException"
        secret, token = self.secrets[key]
        if key in self.expired:
            return "ExpiredTokenException"
        if (region, service) != (REGION, expected_service) or token != request.getHeader("x-amz-security-token"):
            return "InvalidSignatureException"
        names = signed.split(";")
        headers = {n: request.getHeader(n) for n in names if n != "host"}
        if None in headers.values():
            return "InvalidSignatureException"
        url = f"http://{request.getHeader('host')}{request.uri.decode()}"
        rebuilt = AWSRequest(method=request.method.decode(), url=url, data=body, headers=headers)
        rebuilt.context["timestamp"] = headers["x-amz-date"]
        auth = SigV4Auth(Credentials(key, secret, token), service, region)
        expected = auth.signature(auth.string_to_sign(rebuilt, auth.canonical_request(rebuilt)), rebuilt)
        if auth.signed_headers(auth.headers_to_sign(rebuilt)) != signed:
            return "InvalidSignatureException"
        return None if hmac.compare_digest(expected, signature) else "InvalidSignatureException"

    # -- HTTP --------------------------------------------------------------

    def render_POST(self, request):
        body = request.content.read()
        if request.path == b"/":
            return self._assume_role(request, body)
        error = self._verify(request, body, "kinesisvideo")
        payload = json.loads(body or b"{}")
        self.requests.append({"path": request.path.decode(), "body": payload, "signature": error,
                              "key": request.getHeader("authorization").split("Credential=")[1].split("/")[0]
                              if request.getHeader("authorization") else None})
        if error is not None:
            return self._error(request, 403, error, "The request signature we calculated does not match")
        arn = payload.get("StreamARN")
        stream = self.streams.get(arn)
        if stream is None:
            return self._error(request, 404, "ResourceNotFoundException",
                               "The requested stream is not found or not active.")
        if request.path == b"/getDataEndpoint":
            request.setHeader("Content-Type", "application/json")
            return json.dumps({"DataEndpoint": self.base_url}).encode()
        if request.path != b"/getMedia":
            return self._error(request, 404, "UnknownOperationException", "no such operation")
        failure = stream.failures.pop(0) if stream.failures else None
        if isinstance(failure, JsonError):
            return self._error(request, failure.status, failure.type, failure.message)
        start = self._start(stream, payload["StartSelector"])
        request.setHeader("Content-Type", "video/webm")
        self._write(request, stream, start, failure)
        return NOT_DONE_YET

    def _assume_role(self, request, body: bytes) -> bytes:
        """STS AssumeRole (Query API): temporary credentials that this endpoint then accepts."""
        error = self._verify(request, body, "sts")
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        self.requests.append({"path": "/", "body": form, "signature": error})
        if error is not None or form.get("Action") != "AssumeRole":
            request.setResponseCode(403)
            return b"<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>"
        key = f"ASIA{len(self.secrets):016d}"
        secret, token = f"secret-{key}", f"token-{key}"
        self.secrets[key] = (secret, token)
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        request.setHeader("Content-Type", "text/xml")
        return f"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleResult><Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>
<SessionToken>{token}</SessionToken><Expiration>{expiry:%Y-%m-%dT%H:%M:%SZ}</Expiration></Credentials>
<AssumedRoleUser><Arn>{form["RoleArn"]}/{form["RoleSessionName"]}</Arn><AssumedRoleId>AROA:{key}</AssumedRoleId>
</AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleResponse>""".encode()

    def _error(self, request, status: int, error_type: str, message: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("x-amzn-ErrorType", f"{error_type}:http://internal.amazon.com/coral/")
        return json.dumps({"Message": message}).encode()

    def _start(self, stream: FakeStream, selector: dict) -> int:
        kind = selector["StartSelectorType"]
        if kind == "NOW":
            return stream.now_index
        if kind == "FRAGMENT_NUMBER":
            return stream.index_after(selector["AfterFragmentNumber"])
        if kind == "CONTINUATION_TOKEN":
            return stream.index_after(selector["ContinuationToken"])
        return 0

    def _write(self, request, stream: FakeStream, start: int, failure) -> None:
        chunks = [f.data for f in stream.fragments[start:]]
        if isinstance(failure, ErrorTag):
            chunks = chunks[: failure.after_fragments] + [failure.data]
        data_queue = []
        for index, data in enumerate(chunks):
            position = 0
            while position < len(data):
                size = self.random.randint(1, 4096)
                data_queue.append((index, data[position : position + size]))
                position += size
        state = {"sent": 0, "last": 0, "gone": False}
        request.notifyFinish().addBoth(lambda _: state.update(gone=True))

        def step():
            if state["gone"]:
                return
            if not data_queue:
                request.finish()
                return
            index, piece = data_queue[0]
            limit = failure.after_bytes if isinstance(failure, (Cut, Stall)) else None
            if limit is not None and state["sent"] + len(piece) >= limit:
                piece = piece[: limit - state["sent"]]
                if piece:
                    request.write(piece)
                if isinstance(failure, Cut):
                    request.transport.abortConnection()
                return  # a stall: nothing more, the connection stays open
            data_queue.pop(0)
            request.write(piece)
            state["sent"] += len(piece)
            delay = stream.fragment_interval if index != state["last"] else 0
            state["last"] = index
            self.reactor.callLater(delay, step)

        step()


async def start_local_kvs(reactor) -> tuple[LocalKvs, object]:
    resource = LocalKvs(reactor)
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(resource))
    resource.base_url = f"http://127.0.0.1:{port.getHost().port}"
    return resource, port
