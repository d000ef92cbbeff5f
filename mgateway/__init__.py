# -*- test-case-name: tests.test_twistd_plugin,tests.test_lifecycle -*-
"""
asapp-mg: a self-hosted media gateway that turns contact-centre call audio into
per-participant transcripts.
"""
