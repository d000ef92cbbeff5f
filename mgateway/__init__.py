"""
asapp-mg: a self-hosted media gateway that turns contact-centre call audio into
per-participant transcripts.
"""
