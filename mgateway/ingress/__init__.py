# -*- test-case-name: tests.test_wsserver,tests.test_wscore -*-
"""ingress"""
