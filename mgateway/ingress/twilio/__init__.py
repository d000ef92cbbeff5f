# -*- test-case-name: tests.test_twilio_session,tests.test_twilio_api -*-
"""Twilio Media Streams ingress (C{<Start><Stream>} forks of a call)."""
