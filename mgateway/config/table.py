# -*- test-case-name: tests.test_config -*-
"""
Reading typed values from the parsed TOML: L{_Table} hands out one table's
values checked against the keys and defaults it may hold, and turns every
problem into a L{ConfigError} naming the file, the dotted key and what was
expected. Beside it, the checks several sections share and the helpers that
word the errors.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from pathlib import Path
from urllib.parse import urlsplit

import attrs
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor

from mgateway.config.defaults import _BARE_KEY, _REQUIRED
from mgateway.errors import ConfigError


@attrs.frozen
class _Table:
    """
    One TOML table as read from the file, and the keys it may hold with their
    defaults. Hands out typed values and turns every problem into a
    L{ConfigError} naming the key.

    @ivar key: the table's dotted key; empty for the document itself.
    """

    source: Path
    key: str
    data: Mapping
    defaults: Mapping

    def __attrs_post_init__(self):
        for name in self.data:
            if name not in self.defaults:
                raise self.error(name, self._unknown(name))

    def _unknown(self, name: str) -> str:
        what = "section" if not self.key else "key"
        closest = difflib.get_close_matches(name, list(self.defaults), n=1)
        if closest:
            return f"unknown {what}; did you mean {self.key_of(closest[0])}?"
        return f"unknown {what}; expected one of: {', '.join(self.defaults)}"

    def key_of(self, name: str | None) -> str:
        if name is None:
            return self.key
        written = name if _BARE_KEY.fullmatch(name) else _quote(name)
        return f"{self.key}.{written}" if self.key else written

    def error(self, name: str | None, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key_of(name)}: {message}")

    def _value(self, name: str, expected: str, accepts: Callable[[object], bool]):
        value = self.data.get(name, self.defaults[name])
        if value is _REQUIRED:
            raise self.error(name, f"missing; expected {expected}")
        if not accepts(value):
            raise self.error(name, f"expected {expected}, got {_describe(value)}")
        return value

    def string(self, name: str, non_empty: bool = False) -> str:
        if non_empty:
            return self._value(name, "a non-empty string", lambda v: isinstance(v, str) and v != "")
        return self._value(name, "a string", lambda v: isinstance(v, str))

    def boolean(self, name: str) -> bool:
        return self._value(name, "true or false", lambda v: isinstance(v, bool))

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        expected = "one of " + ", ".join(_quote(option) for option in options)
        return self._value(name, expected, lambda v: isinstance(v, str) and v in options)

    def integer(self, name: str, minimum: int) -> int:
        return self._value(
            name, f"an integer >= {minimum}", lambda v: _is_integer(v) and v >= minimum
        )

    def number(self, name: str, minimum: float, exclusive: bool = False) -> float:
        """A number (integer or float) at or above C{minimum}, or above it if C{exclusive}."""
        def accepts(value):
            if not (_is_integer(value) or (isinstance(value, float) and math.isfinite(value))):
                return False
            return value > minimum if exclusive else value >= minimum

        expected = f"a number {'>' if exclusive else '>='} {minimum}"
        return float(self._value(name, expected, accepts))

    def strings(self, name: str) -> tuple[str, ...]:
        def accepts(value):
            return isinstance(value, list) and value and all(isinstance(s, str) for s in value)

        return tuple(self._value(name, "a non-empty array of strings", accepts))

    def string_list(self, name: str) -> tuple[str, ...]:
        """An array of strings, possibly empty."""
        def accepts(value):
            return isinstance(value, list) and all(isinstance(s, str) for s in value)

        return tuple(self._value(name, "an array of strings", accepts))

    def path(self, name: str, base: Path) -> Path:
        """A non-empty path, resolved against C{base} when relative."""
        return base / self.string(name, non_empty=True)

    def table(self, name: str) -> _Table:
        """The sub-table C{name}, whose own keys and defaults are C{defaults[name]}."""
        value = self._value(name, "a table", lambda v: isinstance(v, dict))
        return _Table(self.source, self.key_of(name), value, self.defaults[name])

    def open_table(self, name: str) -> _Table:
        """The sub-table C{name}, whose keys are the user's to choose (none is unknown)."""
        value = self._value(name, "a table", lambda v: isinstance(v, dict))
        return _Table(self.source, self.key_of(name), value, value)

    def tables_by_name(self, name: str, keys: Mapping) -> list[tuple[str, _Table]]:
        """The table C{name} of named tables, each holding C{keys}."""
        value = self._value(name, "a table of tables", lambda v: isinstance(v, dict))
        key = self.key_of(name)
        entries = []
        for entry_name, entry in value.items():
            entry_key = f"{key}.{_quote(entry_name)}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{self.source}: {entry_key}: expected a table, got {_describe(entry)}")
            entries.append((entry_name, _Table(self.source, entry_key, entry, keys)))
        return entries

    def array_of_tables(self, name: str, keys: Mapping) -> list[_Table]:
        """The array of tables C{name}, each holding C{keys}."""
        def accepts(value):
            return isinstance(value, list) and all(isinstance(entry, dict) for entry in value)

        key = self.key_of(name)
        value = self._value(name, f"an array of tables ([[{key}]])", accepts)
        return [_Table(self.source, f"{key}[{i}]", entry, keys) for i, entry in enumerate(value)]


def _check_endpoint(table: _Table, description: str) -> None:
    """
    Parse one listener the way the gateway will, against a reactor that only
    records: this catches malformed strings and missing TLS key and
    certificate files without listening.
    """
    reactor = MemoryReactor()
    try:
        endpoint = serverFromString(reactor, description)
    except Exception as e:  # each endpoint parser fails its own way (ValueError, OSError, SSL errors...)
        raise table.error(
            "listen", f"{_quote(description, None)} is not a usable Twisted endpoint: {_one_line(e)}"
        ) from e
    if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)):
        endpoint.listen(Factory())
        port = (reactor.tcpServers + reactor.sslServers)[0][0]
        if not 0 <= port <= 65535:
            raise table.error("listen", f"{_quote(description, None)}: port {port} is not in 0..65535")


def _distinct_names(table: _Table, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """An array of names from C{allowed}, each at most once."""
    names = table.string_list(name)
    for each in names:
        if each not in allowed or names.count(each) > 1:
            raise table.error(name, f"expected distinct names among {', '.join(allowed)}, got {_quote(each)}")
    return names


def _is_integer(value: object) -> bool:
    """A TOML integer (64-bit); a boolean is not an integer."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _is_url(text: str, schemes: tuple[str, ...]) -> bool:
    """Whether C{text} is an absolute URL of one of C{schemes}, with a host and a valid port."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname) and not parts.query and not parts.fragment


def _describe(value: object) -> str:
    """A value found in the file, for an error message: C{a string "abc"}."""
    if isinstance(value, bool):
        return f"a boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"an integer {value}"
    if isinstance(value, float):
        return f"a float {value}"
    if isinstance(value, str):
        return f"a string {_quote(value)}" if value else "an empty string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime, date, time)):
        return f"a date/time {value.isoformat()}"
    return type(value).__name__


def _quote(text: str, limit: int | None = 80) -> str:
    """
    C{text} in double quotes on one line, with anything unprintable escaped,
    and cut to C{limit} characters unless that is None.
    """
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in quoted)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
