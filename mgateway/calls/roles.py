# -*- test-case-name: tests.test_call_registry -*-
"""
How each ingress's media legs map to the two participants.

A leg is one audio stream as the ingress knows it: an SDP m-line (by its
position), a Twilio track, an AudioHook channel. Which participant it carries
is only known when a start request arrives, so the mapping is a function of
that request. Each returns C{{leg_id: role}} for the legs it knows.
"""

from __future__ import annotations

from typing import Callable, Sequence

from mgateway.calls.requests import StartRequest

RoleMapper = Callable[[StartRequest, Sequence[str]], dict]


def media_line_roles(default_order: str = "CUSTOMER_FIRST") -> RoleMapper:
    """
    SIPREC: legs are m-line positions (C{"0"}, C{"1"}, ...). The top m-line is
    the customer for C{CUSTOMER_FIRST}, the agent for C{AGENT_FIRST}; the
    request's C{siprecParams.mediaLineOrder} wins over C{default_order}.
    """

    def roles(request: StartRequest, legs: Sequence[str]) -> dict:
        order = request.media_line_order or default_order
        first, second = ("customer", "agent") if order == "CUSTOMER_FIRST" else ("agent", "customer")
        ranked = sorted(legs, key=int)
        return {leg: (first if i == 0 else second) for i, leg in enumerate(ranked[:2])}

    return roles


def track_roles(request: StartRequest, legs: Sequence[str]) -> dict:
    """Twilio: C{twilioParams.trackMap} maps C{inbound}/C{outbound} to roles."""
    return {leg: request.track_map[leg] for leg in legs if leg in request.track_map}


def channel_roles(request: StartRequest, legs: Sequence[str]) -> dict:
    """Genesys AudioHook: C{external} is the customer, C{internal} the agent."""
    fixed = {"external": "customer", "internal": "agent"}
    return {leg: fixed[leg] for leg in legs if leg in fixed}


def sender_roles(request: StartRequest, legs: Sequence[str]) -> dict:
    """The direct API: each leg is named by the role its C{startStream} gave."""
    return {leg: leg for leg in legs if leg in ("customer", "agent")}
