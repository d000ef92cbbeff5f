"""
The tokens' old home, for the ingresses that still import them from here; the
module is L{mgateway.tokens}, below the API and the ingresses alike.
"""

from mgateway.tokens import InvalidToken, TokenSigner, signing_key  # noqa: F401
