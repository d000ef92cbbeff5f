# -*- test-case-name: tests.test_config -*-
"""
One parse function per section of the gateway itself and of its egress
(C{[gateway]}, C{[http]}, C{[auth]}, C{[asr]}, C{[webhook]}, C{[store]},
C{[exporter]}, C{[redaction]}, C{[recordings]}): each turns its checked
L{_Table} into the section's frozen value. The ingress sections are in
L{mgateway.config.ingress}.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import attrs

from mgateway.calls.namespaces import API_NAMESPACES
from mgateway.config.defaults import (
    _APP_KEYS,
    _HEADER_NAME,
    _LANGUAGE_KEYS,
    _LANGUAGE_TAG,
    _MODEL_MARKERS,
    _REQUIRED,
    _SHA256_HEX,
)
from mgateway.config.table import _check_endpoint, _describe, _distinct_names, _is_url, _quote, _Table
from mgateway.config.values import (
    App,
    AsrConfig,
    AuthConfig,
    ExporterConfig,
    GatewayConfig,
    HttpConfig,
    LanguageConfig,
    RecordingsConfig,
    RedactionConfig,
    StoreConfig,
    WebhookConfig,
    secret_digest,
)
from mgateway.errors import ConfigError
from mgateway.export.feed import FORMATS as EXPORT_FORMATS
from mgateway.text.redaction import ENTITY_IDS, REQUIRED


def _gateway(table: _Table, base_dir: Path) -> GatewayConfig:
    return GatewayConfig(
        data_dir=table.path("data_dir", base_dir),
        shutdown_grace_seconds=table.number("shutdown_grace_seconds", minimum=0),
    )


def _http(table: _Table) -> HttpConfig:
    listen = table.strings("listen")
    for description in listen:
        _check_endpoint(table, description)
    public_url = table.string("public_url")
    if public_url and not _is_url(public_url, ("ws", "wss")):
        raise table.error(
            "public_url",
            f"expected a ws:// or wss:// URL with a host (or empty), got {_describe(public_url)}",
        )
    return HttpConfig(
        listen=listen,
        public_url=public_url,
        max_body_bytes=table.integer("max_body_bytes", minimum=1),
    )


def _auth(table: _Table) -> AuthConfig:
    apps = []
    for entry in table.array_of_tables("apps", _APP_KEYS):
        app = _app(entry)
        if any(app.api_id == earlier.api_id for earlier in apps):
            raise entry.error("api_id", f"{_quote(app.api_id)} is given twice")
        apps.append(app)
    if not apps:
        raise table.error(
            "apps", "at least one app is required: add an [[auth.apps]] table with api_id and api_secret"
        )
    return AuthConfig(
        token_ttl_seconds=table.number("token_ttl_seconds", minimum=0, exclusive=True),
        token_secret=table.string("token_secret"),
        apps=tuple(apps),
    )


def _app(table: _Table) -> App:
    api_id = table.string("api_id", non_empty=True)
    given = [name for name in ("api_secret", "api_secret_sha256") if name in table.data]
    if len(given) != 1:
        found = "both" if given else "neither"
        raise table.error(None, f"give exactly one of api_secret and api_secret_sha256, found {found}")
    if given == ["api_secret"]:
        secret = table.string("api_secret", non_empty=True)
        return App(api_id, secret_digest(secret))
    digest = table.string("api_secret_sha256")
    if not _SHA256_HEX.fullmatch(digest):
        raise table.error(
            "api_secret_sha256", f"expected 64 hexadecimal digits (a SHA-256), got {_describe(digest)}"
        )
    return App(api_id, bytes.fromhex(digest))


def _asr(table: _Table, base_dir: Path) -> AsrConfig:
    languages = tuple(
        _language(tag, entry, base_dir) for tag, entry in table.tables_by_name("languages", _LANGUAGE_KEYS)
    )
    if not languages:
        raise table.error("languages", 'at least one language is required, e.g. [asr.languages."en-US"]')
    by_tag = {}
    for language in languages:
        tag = language.language
        if tag.casefold() in by_tag:
            raise table.error(
                "languages", f"{_quote(tag)} and {_quote(by_tag[tag.casefold()])} are the same language"
            )
        by_tag[tag.casefold()] = tag
    default = table.string("default_language")
    if default.casefold() not in by_tag:
        raise table.error(
            "default_language",
            f"{_quote(default)} is not one of the configured languages ({', '.join(by_tag.values())})",
        )
    endpoint_silence_ms = table.integer("endpoint_silence_ms", minimum=1)
    max_utterance_ms = table.integer("max_utterance_ms", minimum=1)
    if max_utterance_ms <= endpoint_silence_ms:
        raise table.error(
            "max_utterance_ms",
            f"expected more than endpoint_silence_ms ({endpoint_silence_ms}), got {max_utterance_ms}",
        )
    return AsrConfig(
        threads=table.integer("threads", minimum=0) or os.cpu_count() or 1,
        default_language=by_tag[default.casefold()],
        models_dir=table.path("models_dir", base_dir),
        endpoint_silence_ms=endpoint_silence_ms,
        max_utterance_ms=max_utterance_ms,
        warm_recognizers=table.integer("warm_recognizers", minimum=0),
        languages=languages,
        vad=table.choice("vad", ("silero", "off")),
        vad_threshold=_vad_threshold(table),
        spare_max_audio_seconds=table.integer("spare_max_audio_seconds", minimum=0),
        malloc_trim=table.boolean("malloc_trim"),
    )


def _vad_threshold(table: _Table) -> float:
    threshold = table.number("vad_threshold", minimum=0, exclusive=True)
    if threshold >= 1:
        raise table.error("vad_threshold", f"expected a number > 0 and < 1, got {threshold}")
    return threshold


def _language(tag: str, table: _Table, base_dir: Path) -> LanguageConfig:
    if not _LANGUAGE_TAG.fullmatch(tag):
        raise table.error(None, 'expected a language tag such as "en-US" as the table name')
    model = table.string("model", non_empty=True)
    required = table.boolean("required")
    package = model.removeprefix("package:") if model.startswith("package:") else None
    if package is None:
        candidate = base_dir / model
    elif all(part.isidentifier() for part in package.split(".")):
        candidate = _package_model(package)
    else:
        raise table.error(
            "model", f'expected a directory or "package:NAME" of a Python package, got {_describe(model)}'
        )
    model_path = candidate if candidate is not None and _is_vosk_model(candidate) else None
    if model_path is None and required:
        if candidate is None:
            problem = f"not found: Python package {package} is not installed; install it, or run"
        else:
            problem = f"not found at {candidate}; run"
        raise ConfigError(
            f"{table.source}: model for {tag} {problem} `asapp-mg fetch-model {tag}` "
            f"or fix {table.key_of('model')}"
        )
    return LanguageConfig(language=tag, model=model, model_path=model_path, required=required)


def _package_model(name: str) -> Path | None:
    """
    The C{model} directory inside the installed package C{name}, or None when
    it is not installed. Only the package is located: its code is not run
    (a dotted name does import its parents).
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package is missing, or a broken module
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _is_vosk_model(directory: Path) -> bool:
    return directory.is_dir() and any((directory / marker).is_file() for marker in _MODEL_MARKERS)


def _webhook(table: _Table, base_dir: Path) -> WebhookConfig:
    keys = {key: value for key, value in table.defaults.items() if key != "targets"}
    targets = []
    for entry in table.array_of_tables("targets", keys | {"name": _REQUIRED, "url": _REQUIRED}):
        target = _webhook_target(entry, base_dir, entry.string("name", non_empty=True))
        if not target.url:
            raise entry.error("url", "must not be empty in a [[webhook.targets]] table")
        if any(target.name == earlier.name for earlier in targets) or target.name == "default":
            raise entry.error("name", f"{_quote(target.name)} is used twice (\"default\" is [webhook])")
        targets.append(target)
    return attrs.evolve(_webhook_target(table, base_dir, "default"), targets=tuple(targets))


def _optional_file(table: _Table, name: str, base_dir: Path) -> Path | None:
    """A path that must name an existing file when it is given."""
    if not table.string(name):
        return None
    path = table.path(name, base_dir)
    if not path.is_file():
        raise table.error(name, f"no such file: {path}")
    return path


def _webhook_target(table: _Table, base_dir: Path, name: str) -> WebhookConfig:
    url = table.string("url")
    if url and not _is_url(url, ("http", "https")):
        raise table.error(
            "url", f"expected an http:// or https:// URL with a host (or empty), got {_describe(url)}"
        )
    auth = table.choice("auth", ("none", "secret", "oauth2"))
    secret = table.string("secret")
    if auth == "secret" and not secret:
        raise table.error("secret", 'must not be empty when webhook.auth = "secret"')
    secret_in = table.choice("secret_in", ("header", "query"))
    secret_name = table.string("secret_name", non_empty=True)
    if secret_in == "header" and not _HEADER_NAME.fullmatch(secret_name):
        raise table.error("secret_name", f"expected an HTTP header name, got {_describe(secret_name)}")
    ca_file = _optional_file(table, "ca_file", base_dir)
    client_cert = _optional_file(table, "client_cert", base_dir)
    client_key = _optional_file(table, "client_key", base_dir)
    if (client_cert is None) != (client_key is None):
        raise table.error("client_key", "client_cert and client_key go together (mTLS)")
    passphrase_file = _optional_file(table, "client_key_passphrase_file", base_dir)
    if passphrase_file is not None and client_key is None:
        raise table.error("client_key_passphrase_file", "needs client_key")
    token_url = table.string("token_url")
    if auth == "oauth2":
        if not _is_url(token_url, ("https", "http")):
            raise table.error("token_url", f"expected the token endpoint's URL when auth = \"oauth2\", "
                                           f"got {_describe(token_url)}")
        for key in ("client_id", "client_secret"):
            table.string(key, non_empty=True)
    namespaces = table.string_list("namespaces")
    for namespace in namespaces:
        if namespace not in API_NAMESPACES:
            raise table.error("namespaces", f"{_quote(namespace)} is not one of {', '.join(API_NAMESPACES)}")
    return WebhookConfig(
        url=url,
        auth=auth,
        secret_name=secret_name,
        secret=secret,
        secret_in=secret_in,
        timeout_seconds=table.number("timeout_seconds", minimum=0, exclusive=True),
        ca_file=ca_file,
        concurrency=table.integer("concurrency", minimum=1),
        queue_size=table.integer("queue_size", minimum=1),
        name=name,
        namespaces=namespaces,
        apps=table.string_list("apps"),
        client_cert=client_cert,
        client_key=client_key,
        client_key_passphrase_file=passphrase_file,
        token_url=token_url,
        client_id=table.string("client_id"),
        client_secret=table.string("client_secret"),
        client_auth=table.choice("client_auth", ("client_secret_basic", "client_secret_post")),
        scope=table.string("scope"),
        audience=table.string("audience"),
        token_ca_file=_optional_file(table, "token_ca_file", base_dir),
        retries=table.integer("retries", minimum=0),
    )


def _store(table: _Table, data_dir: Path) -> StoreConfig:
    backend = table.choice("backend", ("sqlite", "postgresql"))
    dsn = table.string("dsn")
    if backend == "postgresql" and not dsn:
        raise table.error("dsn", 'must not be empty when store.backend = "postgresql"')
    return StoreConfig(
        backend=backend,
        sqlite_path=table.path("sqlite_path", data_dir),
        dsn=dsn,
        retention_days=table.number("retention_days", minimum=0, exclusive=True),
        purge_interval_seconds=table.number("purge_interval_seconds", minimum=0, exclusive=True),
    )


def _exporter(table: _Table, data_dir: Path) -> ExporterConfig:
    build_hour = table.integer("build_hour", minimum=0)
    if build_hour > 23:
        raise table.error("build_hour", f"expected an hour of the day, 0 to 23, got {build_hour}")
    return ExporterConfig(
        directory=table.path("directory", data_dir),
        enabled=table.boolean("enabled"),
        build_hour=build_hour,
        formats=_distinct_names(table, "formats", EXPORT_FORMATS) or _no_formats(table),
        url_ttl_seconds=table.number("url_ttl_seconds", minimum=0, exclusive=True),
    )


def _no_formats(table: _Table):
    raise table.error("formats", f"expected at least one of {', '.join(EXPORT_FORMATS)}")


def _redaction(table: _Table) -> RedactionConfig:
    lists = {}
    for name in ("enabled", "disabled"):
        ids = table.string_list(name)
        unknown = [i for i in ids if i not in ENTITY_IDS]
        if unknown:
            raise table.error(name, f"unknown entity {unknown[0]!r}; known: {', '.join(ENTITY_IDS)}")
        lists[name] = ids
    required = [i for i in lists["disabled"] if i in REQUIRED]
    if required:
        raise table.error("disabled", f"{required[0]} is always redacted and cannot be disabled")
    return RedactionConfig(
        table.boolean("always"), lists["enabled"], lists["disabled"],
        table.number("refresh_seconds", minimum=0, exclusive=True),
    )


def _recordings(table: _Table, data_dir: Path) -> RecordingsConfig:
    directory = table.string("directory")
    return RecordingsConfig(data_dir / directory if directory else None)
