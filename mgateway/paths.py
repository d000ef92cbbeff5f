# -*- test-case-name: tests.test_media_gateway_api -*-
"""URL paths of the WebSocket ingresses, shared by the REST app that hands out
their URLs and the transports that serve them."""

DIRECT_STREAM_PATH = "/autotranscribe/v1/stream"
#: The Twilio stream URL carries its token as the next path segment.
TWILIO_STREAM_PATH = "/mg-twilio-autotranscribe/twilio-media"
