# -*- test-case-name: tests.test_store -*-
"""Durable utterance storage behind L{mgateway.interfaces.ITranscriptStore}."""
