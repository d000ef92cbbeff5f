# -*- test-case-name: tests.test_file_exporter_api -*-
"""
The File Exporter API (C{fileexporter.yml}): seven POST endpoints that walk
feed, version, format, date, interval and file, and the short-lived signed
download URL that the last one hands out.

The REST site routes C{/fileexporter/v1/static/<operation>} here after
checking the API key; the download URL needs no API headers: its JWT (the
streaming URLs' token machinery, its own audience and lifetime) is the
credential, checked against the injected clock.

Values may be sent bare (C{"1"}, C{"jsonl"}, C{"2026-12-01"}) as in the
OpenAPI examples, or Hive-style (C{"version=1"}, C{"format=jsonl"},
C{"dt=2026-12-01"}) as in the guide's example; a response repeats what the
request sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit, urlunsplit

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.static import File

from mgateway.api.responses import generic_error
from mgateway.calls.errors import ApiError
from mgateway.export import feed
from mgateway.tokens import InvalidToken, TokenSigner

log = Logger()

#: The audience of download tokens: no other token opens a file.
AUDIENCE = "fileexporter"
DOWNLOAD_PATH = "/fileexporter/v1/files"

_INTERVAL = re.compile(r"hr=[0-9]{2}")
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


def forbidden(message: str) -> ApiError:
    return ApiError(403, "403-01", message)


def http_base(base_url: str) -> str:
    """The REST base URL (C{ws://} or C{wss://} as the streaming URLs') in C{http(s)://}."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(scheme=_HTTP_SCHEMES.get(parts.scheme, parts.scheme)))


class FileExporterApi:
    """
    @param directory: the root of the feed's files (L{mgateway.export.feed}).
    @param formats: the formats built, the ones listed.
    @param tokens: signs and checks download URLs (their TTL is the URL's).
    """

    def __init__(self, directory: Path, formats: tuple[str, ...], tokens: TokenSigner, reactor):
        self._directory = directory
        self._formats = formats
        self.tokens = tokens
        self._reactor = reactor
        self._operations: dict[str, Callable] = {
            "listfeeds": self._list_feeds,
            "listfeedversions": self._list_versions,
            "listfeedformats": self._list_formats,
            "listfeeddates": self._list_dates,
            "listfeedintervals": self._list_intervals,
            "listfeedfiles": self._list_files,
            "getfeedfile": self._get_file,
        }

    async def answer(self, operation: str, body, api_id: str, base_url: str) -> dict:
        """
        The 200 body of C{operation} for the JSON C{body}, or an L{ApiError}:
        400 for a malformed request, 404 for a feed, version, format, date,
        interval or file that does not exist.
        """
        handler = self._operations.get(operation)
        if handler is None:
            raise generic_error(404)
        if operation == "listfeeds":
            return handler()
        if not isinstance(body, dict):
            raise generic_error(400, "request body must be a JSON object")
        return await handler(_Request(body), api_id, base_url)

    def _blocking(self, work, *args):
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), work, *args)

    def _list_feeds(self) -> dict:
        return {"feeds": [feed.FEED]}

    async def _list_versions(self, request: _Request, api_id, base_url) -> dict:
        request.feed()
        return {**request.echo("feed"), "versions": [feed.VERSION]}

    async def _list_formats(self, request: _Request, api_id, base_url) -> dict:
        request.version()
        return {**request.echo("feed", "version"), "formats": list(self._formats)}

    async def _list_dates(self, request: _Request, api_id, base_url) -> dict:
        format = request.format(self._formats)
        dates = await self._blocking(feed.dates, self._directory, format)
        return {**request.echo("feed", "version", "format"), "dates": dates}

    async def _existing_date(self, request: _Request) -> tuple[str, str]:
        format = request.format(self._formats)
        day = request.date()
        if day not in await self._blocking(feed.dates, self._directory, format):
            raise generic_error(404, f"No files for date: {day}")
        return format, day

    async def _list_intervals(self, request: _Request, api_id, base_url) -> dict:
        format, day = await self._existing_date(request)
        intervals = await self._blocking(feed.intervals, self._directory, format, day)
        return {**request.echo("feed", "version", "format", "date"), "intervals": intervals}

    async def _files(self, request: _Request) -> list[tuple[str, str]]:
        format, day = await self._existing_date(request)
        interval = request.interval()
        found = await self._blocking(feed.files, self._directory, format, day, interval)
        if interval is not None and not found:
            raise generic_error(404, f"No files for interval: {interval}")
        return found

    async def _list_files(self, request: _Request, api_id, base_url) -> dict:
        found = await self._files(request)
        return {**request.echo("feed", "version", "format", "date", "interval"),
                "files": [name for _, name in found]}

    async def _get_file(self, request: _Request, api_id, base_url) -> dict:
        name = request.string("fileName")
        found = [interval for interval, each in await self._files(request) if each == name]
        if not found:
            raise generic_error(404, f"File not found: {name}")
        format, day = request.format(self._formats), request.date()
        relative = PurePosixPath(feed.format_dir(Path(), format).as_posix(), f"dt={day}", found[0], name)
        token = self.tokens.issue(AUDIENCE, api_id, file=relative.as_posix())
        log.info("signed URL for {file} issued to {api_id}", file=relative.as_posix(), api_id=api_id)
        return {**request.echo("feed", "version", "format", "date", "interval", "fileName"),
                "url": f"{http_base(base_url)}{DOWNLOAD_PATH}/{token}/{quote(name)}"}

    def download(self, token: str, name: str) -> File:
        """
        The file a signed URL names, as a resource that streams it; an
        L{ApiError} 403 for a forged, expired or foreign token, 404 for a file
        deleted since (retention, a rebuild without its hour).
        """
        try:
            claims = self.tokens.verify(token, AUDIENCE)
        except InvalidToken as e:
            raise forbidden(f"Invalid or expired URL: {e}") from None
        relative = PurePosixPath(str(claims.get("file", "")))
        if relative.name != name or relative.is_absolute() or ".." in relative.parts:
            raise forbidden("Invalid URL")
        path = self._directory / relative
        if not path.is_file():
            raise generic_error(404, f"File not found: {name}")
        resource = File(str(path), defaultType="application/gzip")
        # The file is the download: no Content-Encoding that would make a
        # client unzip it on the way.
        resource.contentEncodings = {}
        resource.contentTypes = {".gz": "application/gzip"}
        return resource


class _Request:
    """The fields of one request body, each checked as it is read."""

    def __init__(self, body: dict):
        self._body = body

    def string(self, name: str) -> str:
        value = self._body.get(name)
        if not isinstance(value, str) or not value:
            raise generic_error(400, f"{name} is required and must be a non-empty string")
        return value

    def _bare(self, name: str, prefix: str) -> str:
        return self.string(name).removeprefix(prefix)

    def echo(self, *names: str) -> dict:
        return {name: self._body[name] for name in names if name in self._body}

    def feed(self) -> str:
        name = self.string("feed")
        if name != feed.FEED:
            raise generic_error(404, f"Feed not found: {name}")
        return name

    def version(self) -> str:
        self.feed()
        version = self._bare("version", "version=")
        if version != feed.VERSION:
            raise generic_error(404, f"Version not found: {version}")
        return version

    def format(self, formats: tuple[str, ...]) -> str:
        self.version()
        format = self._bare("format", "format=")
        if format not in formats:
            raise generic_error(404, f"Format not found: {format}")
        return format

    def date(self) -> str:
        day = self._bare("date", "dt=")
        try:
            return date.fromisoformat(day).isoformat() if len(day) == 10 else _bad_date(day)
        except ValueError:
            return _bad_date(day)

    def interval(self) -> str | None:
        if self._body.get("interval") is None:
            return None
        interval = self.string("interval")
        if not _INTERVAL.fullmatch(interval):
            raise generic_error(400, f'interval must be of the form "hr=HH", got {interval!r}')
        return interval


def _bad_date(day: str):
    raise generic_error(400, f'date must be of the form "YYYY-MM-DD", got {day!r}')


def make_file_exporter_api(config, reactor) -> FileExporterApi:
    """
    The File Exporter API on the exporter's directory. Its download URLs are
    signed with the gateway's key, which the gateway hands to C{api.tokens}
    once it has read it (building the gateway writes no file).
    """
    settings = config.exporter
    tokens = TokenSigner(None, settings.url_ttl_seconds, reactor)
    return FileExporterApi(settings.directory, settings.formats, tokens, reactor)
