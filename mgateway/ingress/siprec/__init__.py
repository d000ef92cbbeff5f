# -*- test-case-name: tests.test_siprec_server,tests.test_siprec_api -*-
"""SIPREC ingress: the Session Recording Server's transports, RTP sockets and service."""
