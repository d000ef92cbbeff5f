# -*- test-case-name: tests.test_fetch_model -*-
"""
Downloading and unpacking a Vosk model into the models directory (the
C{asapp-mg fetch-model} command).

An archive is trusted no further than it must be: every entry has to stay
inside one top-level folder, symbolic links are refused (models are plain
files, and a link is the one way an archive can point outside its folder),
and the unpacked size must fit both a sanity limit and the free disk space.
The model is unpacked into a hidden temporary directory next to its final
place and renamed into place only once complete, so an interrupted or
refused fetch leaves nothing behind that looks like a model.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit

import attrs

#: Where the official models are published, one zip per model.
MODELS_URL = "https://alphacephei.com/vosk/models/"

#: Seconds without progress on the connection before the download fails.
TIMEOUT_SECONDS = 30

#: Largest unpacked model accepted; the biggest official models are a few GB.
MAX_UNPACKED_BYTES = 16 * 2**30
MAX_ENTRIES = 100_000

#: Files of which a Vosk model directory holds at least one (layout 2, layout 1).
_MODEL_MARKERS = ("am/final.mdl", "final.mdl")

_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")
_CHUNK_BYTES = 1 << 16
_TEMP_PREFIX = ".fetch-"


class FetchError(Exception):
    """The model could not be fetched; C{str()} is one line for the operator."""


@attrs.frozen
class CatalogEntry:
    """The official small model for one language."""

    language: str
    name: str

    @property
    def url(self) -> str:
        return f"{MODELS_URL}{self.name}.zip"


#: Official models by language (https://alphacephei.com/vosk/models). Each zip
#: holds one folder named like the zip.
CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("en-US", "vosk-model-small-en-us-0.15"),
    CatalogEntry("es-US", "vosk-model-small-es-0.42"),
    CatalogEntry("fr-FR", "vosk-model-small-fr-0.22"),
    CatalogEntry("de-DE", "vosk-model-small-de-0.15"),
    CatalogEntry("it-IT", "vosk-model-small-it-0.22"),
    CatalogEntry("pt-BR", "vosk-model-small-pt-0.3"),
    CatalogEntry("ru-RU", "vosk-model-small-ru-0.22"),
    CatalogEntry("ja-JP", "vosk-model-small-ja-0.22"),
    CatalogEntry("ko-KR", "vosk-model-small-ko-0.22"),
    CatalogEntry("zh-CN", "vosk-model-small-cn-0.22"),
)


def catalog_entry(language: str) -> CatalogEntry | None:
    """The official model for C{language}, ignoring case (C{en-us} is C{en-US})."""
    wanted = language.casefold()
    return next((entry for entry in CATALOG if entry.language.casefold() == wanted), None)


def is_language_tag(text: str) -> bool:
    return _LANGUAGE_TAG.fullmatch(text) is not None


@attrs.frozen
class Fetched:
    """
    @ivar path: the model directory.
    @ivar downloaded: False when the model was already there and left alone.
    """

    path: Path
    downloaded: bool


#: Told the bytes received so far and the total size, if the server gave one.
ProgressCallback = Callable[[int, int | None], None]


def fetch_model(
    url: str,
    models_dir: Path,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> Fetched:
    """
    Download the zipped model at C{url} and unpack it as
    C{models_dir/<the zip's top-level folder>}.

    Nothing is downloaded when a model named like the zip file (the last part
    of C{url} without C{.zip}) is already there, nor replaced when the folder
    the zip holds is, unless C{force}.

    @raise FetchError: for anything that stops the model from being installed;
        nothing is then left in C{models_dir}.
    """
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise FetchError(f"expected an http, https or file URL, got {url!r}")
    named = PurePosixPath(urlsplit(url).path).name.removesuffix(".zip")
    if named and not force and (models_dir / named).is_dir():
        return Fetched(models_dir / named, downloaded=False)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        archive = tempfile.NamedTemporaryFile(dir=models_dir, prefix=_TEMP_PREFIX, suffix=".zip")
    except OSError as e:
        raise FetchError(f"cannot write to {models_dir}: {_reason(e)}") from e
    with archive:
        try:
            _download(url, archive, progress)
        except OSError as e:
            raise FetchError(f"cannot write to {models_dir}: {_reason(e)}") from e
        return _install(url, archive, models_dir, force)


def _download(url: str, sink: BinaryIO, progress: ProgressCallback | None) -> None:
    """Copy what C{url} serves into C{sink}; errors writing C{sink} are left to the caller."""
    host = urlsplit(url).hostname or url
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}; the model was not downloaded") from e
    except urllib.error.URLError as e:
        raise FetchError(f"cannot reach {host}: {_reason(e.reason)}; the model was not downloaded") from e
    except (OSError, ValueError, http.client.HTTPException) as e:  # a timeout, a bad URL, not HTTP
        raise FetchError(f"cannot reach {host}: {_reason(e)}; the model was not downloaded") from e
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        while True:
            try:
                chunk = response.read(_CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as e:
                raise FetchError(
                    f"download from {host} failed: {_reason(e)}; the model was not downloaded"
                ) from e
            if not chunk:
                break
            sink.write(chunk)
            received += len(chunk)
            if progress is not None:
                progress(received, total)
        sink.flush()
    if total is not None and received != total:
        raise FetchError(
            f"download from {host} stopped after {received} of {total} bytes; the model was not downloaded"
        )


def _install(url: str, archive: BinaryIO, models_dir: Path, force: bool) -> Fetched:
    try:
        with zipfile.ZipFile(archive) as zipped:
            top, members = _plan(zipped.infolist())
            _check_space(url, members, models_dir)
            staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=_TEMP_PREFIX))
            try:
                _unpack(zipped, members, staging)
                if not any((staging / top / marker).is_file() for marker in _MODEL_MARKERS):
                    raise FetchError(
                        f"{url}: {top}/ holds no {' or '.join(_MODEL_MARKERS)}; not a Vosk model"
                    )
                return _move_into_place(staging / top, models_dir / top, force)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        # RuntimeError: an encrypted entry; NotImplementedError: an unknown compression.
        raise FetchError(f"{url}: not a usable zip file ({e}); the model was not installed") from e
    except UnsafeArchive as e:
        raise FetchError(f"{url}: refused: {e}; the model was not installed") from e
    except OSError as e:
        raise FetchError(f"cannot unpack into {models_dir}: {_reason(e)}") from e


class UnsafeArchive(Exception):
    """An archive entry that must not be unpacked."""


def member_path(name: str) -> PurePosixPath:
    """
    The relative path zip entry C{name} unpacks to.

    @raise UnsafeArchive: if it is absolute, climbs with C{..}, names a Windows
        drive or uses backslashes, holds a NUL, or names no file at all.
    """
    path = PurePosixPath(name)
    if (
        not path.parts
        or path.is_absolute()
        or "\\" in name
        or "\0" in name
        or ".." in path.parts
        or ":" in path.parts[0]
    ):
        raise UnsafeArchive(f"entry {name!r} would be written outside the model folder")
    return path


def _plan(infos: list[zipfile.ZipInfo]) -> tuple[str, list[tuple[zipfile.ZipInfo, PurePosixPath]]]:
    """The archive's one top-level folder and each entry with its checked path."""
    if not infos:
        raise UnsafeArchive("the archive is empty")
    if len(infos) > MAX_ENTRIES:
        raise UnsafeArchive(f"{len(infos)} entries is more than {MAX_ENTRIES}")
    members = []
    for info in infos:
        path = member_path(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchive(f"entry {info.filename!r} is a symbolic link")
        members.append((info, path))
    tops = {path.parts[0] for _, path in members}
    if len(tops) != 1 or any(len(path.parts) == 1 and not info.is_dir() for info, path in members):
        raise UnsafeArchive("expected everything inside one top-level folder")
    return tops.pop(), members


def _check_space(url: str, members, models_dir: Path) -> None:
    unpacked = sum(info.file_size for info, _ in members)
    if unpacked > MAX_UNPACKED_BYTES:
        raise UnsafeArchive(f"it unpacks to {unpacked} bytes, more than {MAX_UNPACKED_BYTES}")
    free = shutil.disk_usage(models_dir).free
    if unpacked > free:
        raise FetchError(f"{url}: needs {unpacked} bytes in {models_dir}, only {free} are free")


def _unpack(zipped: zipfile.ZipFile, members, root: Path) -> None:
    for info, path in members:
        target = root.joinpath(*path.parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            destination = target.open("xb")
        except FileExistsError:
            raise UnsafeArchive(f"entry {info.filename!r} appears twice") from None
        with destination, zipped.open(info) as source:
            shutil.copyfileobj(source, destination, _CHUNK_BYTES)


def _move_into_place(unpacked: Path, target: Path, force: bool) -> Fetched:
    if not target.exists():
        unpacked.rename(target)
        return Fetched(target, downloaded=True)
    if not force:
        return Fetched(target, downloaded=False)
    # Two renames: the old model stays whole until the new one takes its place.
    retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=_TEMP_PREFIX)) / target.name
    target.rename(retired)
    unpacked.rename(target)
    shutil.rmtree(retired.parent, ignore_errors=True)
    return Fetched(target, downloaded=True)


def _reason(error: object) -> str:
    """The human part of an exception, without the errno prefix."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class DownloadProgress:
    """
    A L{ProgressCallback} that writes a line to C{write} every C{step} per cent
    (every C{step} MB when the size is unknown) and when the download is complete.
    """

    def __init__(self, url: str, write: Callable[[str], object], step: int = 10):
        self._url = url
        self._write = write
        self._step = step
        self._reported = 0

    def __call__(self, received: int, total: int | None) -> None:
        if total:
            mark = received * 100 // total
            if mark >= self._reported + self._step or (received == total and mark > self._reported):
                self._reported = mark
                self._write(f"downloading {self._url}: {mark}% of {_megabytes(total)}\n")
        else:
            mark = received // 2**20
            if mark >= self._reported + self._step:
                self._reported = mark
                self._write(f"downloading {self._url}: {_megabytes(received)} so far\n")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"



def snippet_path(model: Path, base_dir: Path) -> str:
    """C{model} as written in the configuration: relative to C{base_dir} if inside it."""
    absolute = model.absolute()
    try:
        return absolute.relative_to(base_dir.absolute()).as_posix()
    except ValueError:
        return str(absolute)


def config_snippet(language: str, model: Path, base_dir: Path) -> str:
    """The TOML table that configures C{language} to use C{model}."""
    # A JSON string is also a TOML basic string.
    return f'[asr.languages."{language}"]\nmodel = {json.dumps(snippet_path(model, base_dir), ensure_ascii=False)}\n'
