# -*- test-case-name: tests.test_kvs_pull -*-
"""
AWS credentials for KVS: botocore's credential chain, plus a role per app.

The chain is botocore's own (environment, shared config and credentials
files, container and instance roles, web identity / IRSA). An app may name a
role to assume with an external id (the customer's role that trusts ours);
botocore's assume-role credentials refresh themselves before they expire.
Everything here may block: it is only used from worker threads.
"""

from __future__ import annotations

import functools
import threading

import attrs
import botocore.session
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials


class NoCredentials(Exception):
    """botocore's chain found no credentials."""


@attrs.frozen
class AssumedRole:
    role_arn: str
    external_id: str = ""


class CredentialSource:
    """
    C{source(app_id)}: the credentials to sign that app's requests with.

    @param roles: app id -> L{AssumedRole}; apps not listed use the chain's own.
    @param sts_endpoint_url: where AssumeRole is sent (None: AWS's).
    """

    def __init__(self, roles: dict | None = None, region: str | None = None,
                 sts_endpoint_url: str | None = None, session_factory=botocore.session.get_session):
        self._roles = dict(roles or {})
        self._region = region
        self._sts_endpoint_url = sts_endpoint_url
        self._session_factory = session_factory
        self._session = None
        self._base = None
        self._assumed: dict[str, object] = {}
        self._lock = threading.Lock()

    def __call__(self, app_id: str):
        with self._lock:
            if self._base is None:
                self._session = self._session_factory()
                self._base = self._session.get_credentials()
                if self._base is None:
                    raise NoCredentials("no AWS credentials found by botocore's credential chain")
            role = self._roles.get(app_id)
            if role is None:
                return self._base
            assumed = self._assumed.get(app_id)
            if assumed is None:
                assumed = self._assumed[app_id] = self._assume(app_id, role)
            return assumed

    def _assume(self, app_id: str, role: AssumedRole):
        extra = {"RoleSessionName": f"asapp-mg-{app_id}"[:64]}
        if role.external_id:
            extra["ExternalId"] = role.external_id
        creator = functools.partial(self._session.create_client, endpoint_url=self._sts_endpoint_url)
        if self._region:
            creator = functools.partial(creator, region_name=self._region)
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=creator,
            source_credentials=self._base, role_arn=role.role_arn, extra_args=extra,
        )
        return DeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials,
                                              method="assume-role")

