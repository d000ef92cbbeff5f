"""Amazon Connect: the call audio pulled from Kinesis Video Streams."""
