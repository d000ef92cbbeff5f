# -*- test-case-name: tests.test_export_feed,tests.test_export_service -*-
"""The File Exporter: the daily C{utterances} feed, its files and its schedule."""
