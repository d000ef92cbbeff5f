# -*- test-case-name: tests.test_direct_session,tests.test_direct_api -*-
"""ingress/direct"""
