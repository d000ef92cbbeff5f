# -*- test-case-name: tests.test_webhook -*-
"""egress"""
