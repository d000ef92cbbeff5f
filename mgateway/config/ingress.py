# -*- test-case-name: tests.test_config,tests.test_amazon_connect_config -*-
"""
One parse function per ingress section (C{[direct]}, C{[twilio]},
C{[audiohook]}, C{[sip]}, C{[amazonconnect]}): each turns its checked
L{_Table} into the section's frozen value.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress

from mgateway.calls.requests import MEDIA_LINE_ORDERS
from mgateway.config.defaults import _CONNECT_APP_KEYS, _HEADER_NAME, _REGION, _ROLE_ARN, _URL_PATH
from mgateway.config.table import _check_endpoint, _describe, _distinct_names, _is_integer, _is_url, _Table
from mgateway.config.values import (
    AmazonConnectConfig,
    AmazonConnectRole,
    AudioHookConfig,
    DirectConfig,
    SipConfig,
    TwilioConfig,
)
from mgateway.ingress.audiohook.session import AUTH_FAILURES, ON_STOP
from mgateway.sip.callid import SOURCES as CALL_ID_SOURCES
from mgateway.sip.sdp import DEFAULT_CODEC_PREFERENCE


def _direct(table: _Table) -> DirectConfig:
    return DirectConfig(
        idle_timeout_seconds=table.number("idle_timeout_seconds", minimum=0, exclusive=True),
        max_duration_seconds=table.number("max_duration_seconds", minimum=0, exclusive=True),
        max_message_bytes=table.integer("max_message_bytes", minimum=1),
    )


def _twilio(table: _Table) -> TwilioConfig:
    return TwilioConfig(
        auth_token=table.string("auth_token"),
        max_message_bytes=table.integer("max_message_bytes", minimum=1024),
        max_gap_ms=table.integer("max_gap_ms", minimum=20),
        max_lead_ms=table.integer("max_lead_ms", minimum=0),
        media_timeout_seconds=table.number("media_timeout_seconds", minimum=0, exclusive=True),
        reconnect_grace_seconds=table.number("reconnect_grace_seconds", minimum=0),
        ping_interval_seconds=table.number("ping_interval_seconds", minimum=0, exclusive=True),
        ping_timeout_seconds=table.number("ping_timeout_seconds", minimum=0, exclusive=True),
    )


def _audiohook(table: _Table) -> AudioHookConfig:
    path = table.string("path", non_empty=True)
    if not _URL_PATH.fullmatch(path):
        raise table.error("path", f'expected a URL path starting with "/", got {_describe(path)}')
    keys = table.open_table("keys")
    secrets = {}
    for api_key in keys.data:
        if not api_key:
            raise keys.error(api_key, "expected a non-empty API key")
        secret = keys.string(api_key)
        if not _is_base64(secret):
            raise keys.error(
                api_key, f"expected the base64 client secret (empty: unsigned), got {_describe(secret)}"
            )
        secrets[api_key] = secret
    return AudioHookConfig(
        path=path,
        keys=secrets,
        auth_failure=table.choice("auth_failure", AUTH_FAILURES),
        on_stop=table.choice("on_stop", ON_STOP),
        max_message_bytes=table.integer("max_message_bytes", minimum=1024),
        allow_l16=table.boolean("allow_l16"),
    )


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _sip(table: _Table) -> SipConfig:
    listen = table.string_list("listen")
    for description in listen:
        _check_endpoint(table, description)
    rtp_interface = _ip_address(table, "rtp_interface")
    rtp_address = _ip_address(table, "rtp_address") if table.string("rtp_address") else ""
    if not rtp_address and ipaddress.ip_address(rtp_interface).is_unspecified:
        raise table.error("rtp_address", f"must be set when rtp_interface is {rtp_interface} (every interface)")
    low, high = _port(table, "rtp_port_min", 1), _port(table, "rtp_port_max", 1)
    if high < low + low % 2:
        raise table.error("rtp_port_max", f"expected an even port from rtp_port_min ({low}) up, got {high}")
    sources = _distinct_names(table, "call_id_sources", CALL_ID_SOURCES)
    codecs = _distinct_names(table, "codecs", DEFAULT_CODEC_PREFERENCE)
    if not codecs:
        raise table.error("codecs", "expected at least one codec")
    header = table.string("call_id_header")
    if header and not _HEADER_NAME.fullmatch(header):
        raise table.error("call_id_header", f"expected a SIP header name, got {_describe(header)}")
    return SipConfig(
        enabled=table.boolean("enabled"),
        udp_interface=_ip_address(table, "udp_interface"),
        udp_port=_port(table, "udp_port", 0),
        listen=listen,
        max_message_bytes=table.integer("max_message_bytes", minimum=4096),
        rtp_interface=rtp_interface,
        rtp_address=rtp_address or rtp_interface,
        rtp_port_min=low,
        rtp_port_max=high,
        rtp_receive_buffer_bytes=table.integer("rtp_receive_buffer_bytes", minimum=65536),
        fill_silence_after_ms=table.integer("fill_silence_after_ms", minimum=0),
        accept_plain_invites=table.boolean("accept_plain_invites"),
        codecs=codecs,
        media_line_order=table.choice("media_line_order", MEDIA_LINE_ORDERS),
        call_id_sources=sources,
        call_id_header=header,
        media_timeout_seconds=table.number("media_timeout_seconds", minimum=0),
        replace_silent_after_seconds=table.number("replace_silent_after_seconds", minimum=0),
    )


def _ip_address(table: _Table, name: str) -> str:
    text = table.string(name)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise table.error(name, f"expected an IP address, got {_describe(text)}") from None


def _port(table: _Table, name: str, minimum: int) -> int:
    return table._value(
        name, f"a port number from {minimum} to 65535", lambda v: _is_integer(v) and minimum <= v <= 65535
    )


def _amazonconnect(table: _Table) -> AmazonConnectConfig:
    region = table.string("region")
    if not _REGION.fullmatch(region):
        raise table.error("region", f'expected an AWS region such as "us-east-1", got {_describe(region)}')
    urls = {}
    for name in ("endpoint_url", "sts_endpoint_url"):
        urls[name] = table.string(name)
        if urls[name] and not _is_url(urls[name], ("http", "https")):
            raise table.error(name, f"expected an http(s) URL, got {_describe(urls[name])}")
    apps = []
    for api_id, app in table.tables_by_name("apps", _CONNECT_APP_KEYS):
        role_arn = app.string("role_arn", non_empty=True)
        if not _ROLE_ARN.fullmatch(role_arn):
            raise app.error("role_arn", f"expected an IAM role ARN, got {_describe(role_arn)}")
        apps.append((api_id, AmazonConnectRole(role_arn, app.string("external_id"))))
    return AmazonConnectConfig(
        region=region,
        endpoint_url=urls["endpoint_url"],
        sts_endpoint_url=urls["sts_endpoint_url"],
        connect_timeout_seconds=table.number("connect_timeout_seconds", 0, exclusive=True),
        stall_seconds=table.number("stall_seconds", 0, exclusive=True),
        backoff_base_seconds=table.number("backoff_base_seconds", 0),
        backoff_max_seconds=table.number("backoff_max_seconds", 0),
        max_failures=table.integer("max_failures", minimum=1),
        stopped_call_seconds=table.number("stopped_call_seconds", 0, exclusive=True),
        apps=tuple(apps),
    )
