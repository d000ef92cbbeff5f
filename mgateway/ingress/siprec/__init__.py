"""SIPREC ingress: the Session Recording Server's transports, RTP sockets and service."""
