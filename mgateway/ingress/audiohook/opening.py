# -*- test-case-name: tests.test_audiohook_session -*-
"""
What an AudioHook C{open} must hold, and which of its media offers a
session accepts.
"""

from __future__ import annotations

from mgateway.ingress.audiohook.messages import ProtocolError, is_language, is_uuid

#: The one sample rate taken (the stream timeline counts its samples).
RATE = 8000

#: Channel orders we take, best first: both participants, then the customer
#: alone, then the agent alone (the compliance suite's internal-only offer,
#: which Genesys's reference server opens too).
CHANNEL_PREFERENCE = (("external", "internal"), ("internal", "external"), ("external",), ("internal",))


def select_media(offers: list, allow_l16: bool = False) -> dict | None:
    """
    The offer to accept, as the very object offered: PCMU before L16, then
    by L{CHANNEL_PREFERENCE}. None when no offer is 8 kHz audio we can split
    into customer and agent (offers we do not understand are passed over).
    """
    for media_format in ("PCMU", "L16") if allow_l16 else ("PCMU",):
        for channels in CHANNEL_PREFERENCE:
            for offer in offers:
                if (isinstance(offer, dict) and offer.get("type") == "audio" and offer.get("rate") == RATE
                        and offer.get("format") == media_format and offer.get("channels") == list(channels)):
                    return offer
    return None


def check_open(parameters: dict) -> None:
    """Raises L{ProtocolError} naming every parameter of C{open} that is missing or malformed."""
    participant = parameters.get("participant")
    problems = [
        name for name, ok in (
            ("organizationId", is_uuid(parameters.get("organizationId"))),
            ("conversationId", is_uuid(parameters.get("conversationId"))),
            ("participant", isinstance(participant, dict) and is_uuid(participant.get("id"))
             and all(isinstance(participant.get(k), str) for k in ("ani", "aniName", "dnis"))),
            ("media", isinstance(parameters.get("media"), list)),
            ("language", "language" not in parameters or is_language(parameters["language"])),
            ("supportedLanguages", isinstance(parameters.get("supportedLanguages", False), bool)),
            ("customConfig", isinstance(parameters.get("customConfig", {}), dict)),
        ) if not ok
    ]
    if problems:
        raise ProtocolError(f"Invalid 'open' parameters: {', '.join(problems)}")
