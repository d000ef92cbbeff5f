# -*- test-case-name: tests.test_audiohook_session,tests.test_audiohook_api -*-
"""Genesys Cloud AudioHook Monitor ingress (protocol version 2)."""
