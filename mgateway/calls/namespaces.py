# -*- test-case-name: tests.test_call_registry -*-
"""
Where a call came from: the namespaces of the call registry.

The Start/Stop API names the first four (the spec's C{namespace} field); the
direct WebSocket API's streams are one-leg calls of their own namespace,
which no Start/Stop request can reach.
"""

SIPREC = "siprec"
TWILIO = "twilio"
AMAZON_CONNECT = "amazonconnect"
GENESYS_AUDIOHOOK = "genesysaudiohook"
DIRECT = "direct"

#: The namespaces a Start/Stop request may name.
API_NAMESPACES = (SIPREC, TWILIO, AMAZON_CONNECT, GENESYS_AUDIOHOOK)
