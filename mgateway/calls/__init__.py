# -*- test-case-name: tests.test_call_registry -*-
"""calls"""
