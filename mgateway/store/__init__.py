"""Durable utterance storage behind L{mgateway.interfaces.ITranscriptStore}."""
