# -*- test-case-name: tests.test_kvs_mkv,tests.test_kvs_pull,tests.test_amazon_connect_api -*-
"""Amazon Connect: the call audio pulled from Kinesis Video Streams."""
