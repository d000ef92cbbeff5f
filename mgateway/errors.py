# -*- test-case-name: tests.test_config -*-
"""
Errors that more than one layer raises or catches, kept below all of them.
"""


class ConfigError(Exception):
    """The configuration cannot be used; C{str()} is one line naming file and key."""
