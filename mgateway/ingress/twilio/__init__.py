"""Twilio Media Streams ingress (C{<Start><Stream>} forks of a call)."""
