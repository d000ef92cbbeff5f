"""Genesys Cloud AudioHook Monitor ingress (protocol version 2)."""
