"""
Genesys Cloud's side of an AudioHook Monitor session, sans-I/O: the signed
upgrade headers, then the text messages and binary audio frames the client
sends, byte for byte as Genesys and the reference client serialise them
(compact JSON; keys version, type, id, seq, serverseq, position,
parameters). It also checks what the server answers the way the reference
client does (seq continuity, pong.clientseq, opened media one of the offers).

The defaults are the ids, key and secret of the protocol's documented
example and signature test vector. Over a real socket, set C{authority} to
the C{Host} the WebSocket library will send (C{"127.0.0.1:PORT"}).
"""

from __future__ import annotations

import json

import numpy as np

from mgateway.ingress.audiohook.messages import NS_PER_SECOND, format_duration
from mgateway.ingress.audiohook.signature import sign_upgrade
from mgateway.media.g711 import ulaw_encode

ORGANIZATION_ID = "d7934305-0972-4844-938e-9060eef73d05"
CORRELATION_ID = "e160e428-53e2-487c-977d-96989bf5c99d"
SESSION_ID = "30b0e395-84d3-4570-ac13-9a62d8f514c0"
API_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
CLIENT_SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
AUTHORITY = "audiohook.example.com"
PATH = "/api/v1/voicebiometrics/ws"
CONVERSATION_ID = "56f79392-2922-4e68-803b-b0c8aee0d63c"
PARTICIPANT = {"id": "bc90c400-6661-4839-b2b3-71cc9fff5207", "ani": "+1-555-555-1234", "aniName": "John Doe",
               "dnis": "+1-800-555-6789"}
NULL_UUID = "00000000-0000-0000-0000-000000000000"
PROBE_PARTICIPANT = {"id": NULL_UUID, "ani": "", "aniName": "", "dnis": ""}

STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
EXTERNAL = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
INTERNAL = {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}
#: The offers of the documented C{open} example, in Genesys's order.
DOCUMENTED_OFFERS = (STEREO, EXTERNAL, INTERNAL)
DOCUMENTED_CUSTOM_CONFIG = {"foo": "bar"}

_SERVER_KEYS = ["version", "type", "id", "seq", "clientseq", "parameters"]


class ServerViolation(AssertionError):
    """The server sent what Genesys would reject (the client's error 400/409)."""


def interleave(*channels: bytes) -> bytes:
    """Byte-per-sample channels (mu-law) interleaved sample by sample."""
    return np.stack([np.frombuffer(c, np.uint8) for c in channels], axis=1).tobytes()


class AudioHookClient:
    def __init__(
        self,
        session_id: str = SESSION_ID,
        organization_id: str = ORGANIZATION_ID,
        correlation_id: str = CORRELATION_ID,
        conversation_id: str = CONVERSATION_ID,
        participant: dict = PARTICIPANT,
        api_key: str = API_KEY,
        client_secret: str = CLIENT_SECRET,
        authority: str = AUTHORITY,
        path: str = PATH,
    ):
        self.session_id = session_id
        self.organization_id = organization_id
        self.correlation_id = correlation_id
        self.conversation_id = conversation_id
        self.participant = participant
        self.api_key = api_key
        self.client_secret = client_secret
        self.authority = authority
        self.path = path
        self.seq = 0
        self.serverseq = 0
        self.position_ns = 0
        self.offers: list | None = None
        self.selected: dict | None = None
        self.received: list[dict] = []
        self._pending_ping: int | None = None

    @classmethod
    def probe(cls, **kwargs) -> AudioHookClient:
        """The connection probe Genesys runs when an integration is activated."""
        return cls(conversation_id=NULL_UUID, participant=PROBE_PARTICIPANT, **kwargs)

    # --- handshake ---------------------------------------------------------

    def upgrade_headers(self, created: int, nonce: str, expires: int | None = None,
                        signed: bool = True) -> dict[str, str]:
        """The AudioHook headers of the upgrade request (the WebSocket library adds Host and the rest)."""
        headers = {
            "User-Agent": "GenesysCloud-AudioHook-Client",
            "Audiohook-Organization-Id": self.organization_id,
            "Audiohook-Correlation-Id": self.correlation_id,
            "Audiohook-Session-Id": self.session_id,
            "X-API-KEY": self.api_key,
        }
        if signed:
            signature = sign_upgrade(self.path, self.authority, headers, self.api_key, self.client_secret,
                                     created=created, nonce=nonce, expires=expires)
            headers["Signature"] = signature["Signature"]
            headers["Signature-Input"] = signature["Signature-Input"]
        return headers

    # --- client messages ---------------------------------------------------

    def message(self, type: str, parameters: dict) -> str:
        self.seq += 1
        return json.dumps({"version": "2", "type": type, "id": self.session_id, "seq": self.seq,
                           "serverseq": self.serverseq, "position": format_duration(self.position_ns),
                           "parameters": parameters}, separators=(",", ":"), ensure_ascii=False)

    def open(self, offers=DOCUMENTED_OFFERS, language: str | None = "en-US", supported_languages: bool | None = True,
             custom_config: dict | None = DOCUMENTED_CUSTOM_CONFIG) -> str:
        self.offers = [dict(offer) for offer in offers]
        parameters = {"organizationId": self.organization_id, "conversationId": self.conversation_id,
                      "participant": self.participant, "media": self.offers}
        if language is not None:
            parameters["language"] = language
        if supported_languages is not None:
            parameters["supportedLanguages"] = supported_languages
        if custom_config is not None:
            parameters["customConfig"] = custom_config
        return self.message("open", parameters)

    def ping(self, rtt_ns: int | None = None) -> str:
        text = self.message("ping", {} if rtt_ns is None else {"rtt": format_duration(rtt_ns)})
        self._pending_ping = self.seq
        return text

    def paused(self) -> str:
        return self.message("paused", {})

    def resumed(self, discarded_ns: int = 0) -> str:
        return self.message("resumed", self._skip(discarded_ns))

    def discarded(self, discarded_ns: int) -> str:
        return self.message("discarded", self._skip(discarded_ns))

    def update(self, language: str) -> str:
        return self.message("update", {"language": language})

    def error(self, code: int, message: str) -> str:
        return self.message("error", {"code": code, "message": message})

    def close(self, reason: str = "end") -> str:
        return self.message("close", {"reason": reason})

    def _skip(self, discarded_ns: int) -> dict:
        start = self.position_ns
        self.position_ns += discarded_ns
        return {"start": format_duration(start), "discarded": format_duration(discarded_ns)}

    # --- audio -------------------------------------------------------------

    def audio(self, frame: bytes) -> bytes:
        """One binary frame of the selected media; the stream position advances."""
        channels = len(self.selected["channels"]) * (2 if self.selected["format"] == "L16" else 1)
        assert len(frame) % channels == 0, "frames hold whole samples for every channel"
        self.position_ns += len(frame) // channels * NS_PER_SECOND // self.selected["rate"]
        return frame

    def pcmu_frames(self, pcm_by_channel: dict[str, bytes], samples_per_frame=(800,)) -> list[bytes]:
        """
        16-bit PCM per channel name, mu-law encoded, interleaved in the
        selected channel order and cut into frames of the given numbers of
        samples (cycled; Genesys sends 100 ms = 800 samples, the reference
        client 200 ms; the last frame is short).
        """
        mulaw = interleave(*(ulaw_encode(pcm_by_channel[name]) for name in self.selected["channels"]))
        width = len(self.selected["channels"])
        frames, at, i = [], 0, 0
        while at < len(mulaw):
            size = samples_per_frame[i % len(samples_per_frame)] * width
            frames.append(self.audio(mulaw[at : at + size]))
            at, i = at + size, i + 1
        return frames

    # --- server messages ---------------------------------------------------

    def receive(self, text: str) -> dict:
        """Check one server message as Genesys would, and remember it."""
        message = json.loads(text)
        if list(message) != _SERVER_KEYS:
            raise ServerViolation(f"keys {list(message)}, expected {_SERVER_KEYS}: {text}")
        if message["version"] != "2" or message["id"] != self.session_id:
            raise ServerViolation(f"bad version or id: {text}")
        if message["seq"] != self.serverseq + 1:
            raise ServerViolation(f"server seq {message['seq']} after {self.serverseq}: {text}")
        if not isinstance(message["parameters"], dict):
            raise ServerViolation(f"parameters missing: {text}")
        if message["clientseq"] > self.seq:
            raise ServerViolation(f"clientseq {message['clientseq']} beyond our seq {self.seq}: {text}")
        self.serverseq = message["seq"]
        if message["type"] == "pong":
            if message["clientseq"] != self._pending_ping:
                raise ServerViolation(f"pong clientseq {message['clientseq']}, ping seq {self._pending_ping}")
            self._pending_ping = None
        if message["type"] == "opened":
            media = message["parameters"]["media"]
            if len(media) > 1:
                raise ServerViolation("More than one media selected")
            if media and media[0] not in (self.offers or []):
                raise ServerViolation("Selected media not one of the offered")
            self.selected = media[0] if media else None
        self.received.append(message)
        return message

    def receive_all(self, texts: list[str]) -> list[dict]:
        return [self.receive(text) for text in texts]
