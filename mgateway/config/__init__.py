# -*- test-case-name: tests.test_config -*-
"""
The gateway's configuration: a TOML file (the commented example is
C{etc/asapp-mg.toml}) read into frozen values.

Every key has the default shown in the example except C{auth.apps}. Every
problem -- an unreadable file, bad TOML, an unknown or misspelt key, a value
of the wrong type or out of range, a listener Twisted cannot parse, a required
model that is not there -- is a L{ConfigError} whose text is one line naming
the file, the dotted key and what was expected, so that the gateway refuses to
start with a message an operator can act on instead of a traceback.

L{load} reads the file, L{values} holds the frozen sections, L{defaults}
what the file may hold, L{table} the typed reader, L{sections} and L{ingress}
one parse function per section.
"""

from mgateway.config.load import load_config, parse_config
from mgateway.config.values import (
    AmazonConnectRole,
    App,
    AsrConfig,
    AuthConfig,
    Config,
    SipConfig,
    StoreConfig,
    WebhookConfig,
)
from mgateway.errors import ConfigError

__all__ = [
    "AmazonConnectRole", "App", "AsrConfig", "AuthConfig", "Config", "ConfigError",
    "SipConfig", "StoreConfig", "WebhookConfig", "load_config", "parse_config",
]
