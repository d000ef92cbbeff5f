# -*- test-case-name: tests.test_asr -*-
"""asr"""
