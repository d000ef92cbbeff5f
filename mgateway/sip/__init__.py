# -*- test-case-name: tests.test_sip_message,tests.test_sip_uas,tests.test_sdp -*-
"""
The Session Recording Server's protocol cores: SIP messages and their framing,
multipart bodies, SDP offer/answer, RFC 7865 recording metadata and the
vendor call identifiers. Pure code: bytes in, values out; the Twisted
transports live elsewhere.
"""
