"""The broker settings of the security model, with Kafka's names, parsed and checked together.

Their ``ConfigDef``s are ``tidelog.config.SECURITY_CONFIGS`` (part of the broker's settings).
``SecuritySettings.from_config`` turns the resolved values into the objects the broker needs,
or raises a one-line ``ConfigError`` naming the setting and where its value came from.

Tidelog's conveniences over Kafka: an empty ``listeners`` is one PLAINTEXT listener on the
``--host``/``--port`` of ``tidelog serve`` (today's one-command start; a wildcard ``--host``
listens on every interface and advertises this host's name); an
``advertised.listeners`` of ``host:port`` without a listener name, with one listener, is that
listener's; with one listener and no inter-broker setting, brokers use that listener.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tidelog.config import SECURITY_CONFIGS, ConfigError
from tidelog.security.authorizer import Authorizer
from tidelog.security.principal import KafkaPrincipal, ListenerConfig, resolve_listeners
from tidelog.security.quotas import QuotaManagers
from tidelog.security.sasl_mechanisms import SUPPORTED_MECHANISMS, PlainUsersFile, SaslMechanisms
from tidelog.security.scram_credentials import CredentialStore

# Longest first, so "advertised.listeners" is found before "listeners".
_SETTING_NAMES = sorted([d.name for d in SECURITY_CONFIGS] + ["advertised.listeners"], key=len, reverse=True)


def parse_super_users(text: str) -> frozenset[str]:
    """``User:admin;User:broker`` -> their principal strings, each checked as Kafka does."""
    users = set()
    for item in text.split(";"):
        item = item.strip()
        if item:
            try:
                KafkaPrincipal.parse(item)
            except ValueError as e:
                raise ConfigError(f"super.users: {e}") from None
            users.add(item)
    return frozenset(users)


def _with_source(error: ConfigError, sources: Mapping[str, str]) -> ConfigError:
    """Add where the named setting came from: a source ("flag") or an origin ("from --set")."""
    message = str(error)
    named = [n for n in _SETTING_NAMES if message.startswith(n)] or [n for n in _SETTING_NAMES if n in message]
    if named and named[0] in sources:
        source = sources[named[0]]
        return ConfigError(f"{message} ({source if source.startswith(('from ', 'in ')) else f'from {source}'})")
    return error


@dataclass(frozen=True)
class TlsSettings:
    """The ``ssl.*`` settings of the SSL and SASL_SSL listeners (PEM files)."""

    keystore: Path
    key_password: str | None
    truststore: Path | None
    client_auth: str  # none | requested | required
    protocols: tuple[str, ...]
    cipher_suites: str  # OpenSSL's cipher list syntax; "" for its defaults

    @classmethod
    def from_config(cls, values: Mapping, tls_listeners: list[str]) -> "TlsSettings | None":
        if not tls_listeners and not values.get("http.ssl.enable"):
            return None
        keystore = values["ssl.keystore.location"].strip()
        if not keystore:
            who = f"the TLS listener {tls_listeners[0]}" if tls_listeners else "http.ssl.enable"
            raise ConfigError(f"ssl.keystore.location: {who} needs a PEM file with the "
                              f"broker's certificate chain and private key")
        truststore = values["ssl.truststore.location"].strip()
        client_auth = values["ssl.client.auth"]
        if client_auth != "none" and not truststore:
            raise ConfigError(f"ssl.client.auth: {client_auth} needs ssl.truststore.location (the CA certificates "
                              f"client certificates are checked against)")
        protocols = tuple(p for p in values["ssl.enabled.protocols"].split(",") if p)
        if not protocols:
            raise ConfigError("ssl.enabled.protocols: at least one of TLSv1.2, TLSv1.3 is needed")
        return cls(Path(keystore), values["ssl.key.password"] or None, Path(truststore) if truststore else None,
                   client_auth, protocols, values["ssl.cipher.suites"].replace(",", ":"))


@dataclass(frozen=True)
class SecuritySettings:
    listeners: ListenerConfig
    sasl_enabled_mechanisms: tuple[str, ...]
    plain_users_file: Path | None
    sasl_max_receive_bytes: int
    max_reauth_ms: int
    failed_authentication_delay_ms: int
    authorizer_enabled: bool
    super_users: frozenset[str]
    allow_everyone_if_no_acl_found: bool
    quota_window_num: int
    quota_window_size_seconds: int
    tls: TlsSettings | None = None  # None without an SSL or SASL_SSL listener

    @classmethod
    def from_config(cls, values: Mapping, sources: Mapping[str, str] | None = None, host: str = "127.0.0.1",
                    port: int = 9092) -> "SecuritySettings":
        """Check the security settings in ``values`` (a resolved BrokerConfig's) together."""
        try:
            return cls._from_config(values, host, port)
        except ConfigError as e:
            raise _with_source(e, sources or {}) from None

    @classmethod
    def _from_config(cls, values: Mapping, host: str, port: int) -> "SecuritySettings":
        every_interface = host in ("", "0.0.0.0", "::")
        listeners = values["listeners"].strip() or f"PLAINTEXT://{'' if every_interface else host}:{port}"
        # An advertised endpoint without a host (from a listener on every interface): this
        # host's name, as Kafka advertises its canonical host name; otherwise --host.
        default_host = socket.gethostname() if every_interface else host
        advertised = values.get("advertised.listeners", "").strip()
        if advertised and "://" not in advertised and "," not in listeners:
            advertised = f"{listeners.split('://')[0]}://{advertised}"
        listener_config = resolve_listeners(
            listeners, advertised, values["listener.security.protocol.map"], values["inter.broker.listener.name"],
            values["security.inter.broker.protocol"], default_host=default_host)
        mechanisms = tuple(m.strip() for m in values["sasl.enabled.mechanisms"].split(",") if m.strip())
        if any(e.security_protocol.uses_sasl for e in listener_config.listeners):
            unknown = [m for m in mechanisms if m not in SUPPORTED_MECHANISMS]
            if unknown or not mechanisms:
                raise ConfigError(f"sasl.enabled.mechanisms: {', '.join(unknown) or 'none'} not supported on a SASL "
                                  f"listener; supported: {', '.join(SUPPORTED_MECHANISMS)}")
        users_file = values["sasl.plain.users.file"].strip()
        tls_listeners = [e.listener_name for e in listener_config.listeners if e.security_protocol.uses_tls]
        return cls(
            listeners=listener_config,
            sasl_enabled_mechanisms=mechanisms,
            plain_users_file=Path(users_file) if users_file else None,
            sasl_max_receive_bytes=values["sasl.server.max.receive.size"],
            max_reauth_ms=values["connections.max.reauth.ms"],
            failed_authentication_delay_ms=values["connection.failed.authentication.delay.ms"],
            authorizer_enabled=bool(values["authorizer.class.name"]),
            super_users=parse_super_users(values["super.users"]),
            allow_everyone_if_no_acl_found=values["allow.everyone.if.no.acl.found"],
            quota_window_num=values["quota.window.num"],
            quota_window_size_seconds=values["quota.window.size.seconds"],
            tls=TlsSettings.from_config(values, tls_listeners),
        )

    def authorizer(self) -> Authorizer | None:
        """A new authorizer (load it from the ACL store), or None when ACLs are off."""
        if not self.authorizer_enabled:
            return None
        return Authorizer(self.super_users, self.allow_everyone_if_no_acl_found)

    def quota_managers(self) -> QuotaManagers:
        return QuotaManagers(self.quota_window_num, self.quota_window_size_seconds)

    def sasl_mechanisms(self, credentials: CredentialStore) -> SaslMechanisms:
        """The mechanisms of the SASL listeners; reads ``sasl.plain.users.file`` when set."""
        plain = PlainUsersFile(self.plain_users_file) if self.plain_users_file is not None else None
        return SaslMechanisms(self.sasl_enabled_mechanisms, credentials, plain)
