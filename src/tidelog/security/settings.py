"""The broker settings of the security model, with Kafka's names, parsed and checked together.

``SECURITY_CONFIGS`` are ``ConfigDef``s to add to ``tidelog.config.BROKER_CONFIGS`` when the
model is wired in (``advertised.listeners`` is already there). ``SecuritySettings.from_config``
turns the resolved values into the objects the broker needs, or raises a one-line
``ConfigError`` naming the setting and where its value came from.

Tidelog's conveniences over Kafka: an empty ``listeners`` is one PLAINTEXT listener on the
``--host``/``--port`` of ``tidelog serve`` (today's one-command start); an
``advertised.listeners`` of ``host:port`` without a listener name, with one listener, is that
listener's; with one listener and no inter-broker setting, brokers use that listener.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tidelog.config import ConfigDef, ConfigError
from tidelog.security.authorizer import Authorizer
from tidelog.security.principal import DEFAULT_PROTOCOL_MAP, KafkaPrincipal, ListenerConfig, resolve_listeners
from tidelog.security.quotas import QuotaManagers
from tidelog.security.sasl import MAX_RECEIVE_SIZE_BEFORE_AUTHENTICATION
from tidelog.security.sasl_mechanisms import SUPPORTED_MECHANISMS, PlainUsersFile, SaslMechanisms
from tidelog.security.scram_credentials import CredentialStore

# Kafka's authorizer class names; either turns the ACL authorizer on.
AUTHORIZER_CLASS_NAMES = ("", "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                          "kafka.security.authorizer.AclAuthorizer")

SECURITY_CONFIGS: tuple[ConfigDef, ...] = (
    ConfigDef("listeners", "STRING", "", "NAME://host:port,... to listen on; empty: PLAINTEXT on --host/--port.",
              read_only=True),
    ConfigDef("listener.security.protocol.map", "STRING", DEFAULT_PROTOCOL_MAP,
              "NAME:PROTOCOL,... (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) for each listener name.", read_only=True),
    ConfigDef("inter.broker.listener.name", "STRING", "", "The listener brokers reach each other on.", read_only=True),
    ConfigDef("security.inter.broker.protocol", "STRING", "",
              "Instead of inter.broker.listener.name: the listener named after this protocol.", read_only=True),
    ConfigDef("sasl.enabled.mechanisms", "LIST", ",".join(SUPPORTED_MECHANISMS),
              "SASL mechanisms offered on SASL listeners.", read_only=True),
    ConfigDef("sasl.plain.users.file", "STRING", "",
              "PLAIN users as username:password lines; empty: PLAIN checks the SCRAM credentials.", read_only=True),
    ConfigDef("sasl.server.max.receive.size", "INT", MAX_RECEIVE_SIZE_BEFORE_AUTHENTICATION,
              "Largest frame accepted before a client has authenticated.", minimum=1, read_only=True),
    ConfigDef("connections.max.reauth.ms", "LONG", 0,
              "SASL sessions last this long; clients re-authenticate (KIP-368) or are disconnected. 0: forever.",
              minimum=0, read_only=True),
    ConfigDef("connection.failed.authentication.delay.ms", "INT", 100,
              "How long a connection whose authentication failed is held before it is closed.", minimum=0,
              read_only=True),
    ConfigDef("authorizer.class.name", "STRING", "", "A Kafka authorizer class name turns ACLs on; empty: off.",
              choices=AUTHORIZER_CLASS_NAMES, read_only=True),
    ConfigDef("super.users", "STRING", "", "Principals allowed everything, separated by ';' (User:admin;User:broker).",
              read_only=True),
    ConfigDef("allow.everyone.if.no.acl.found", "BOOLEAN", False,
              "Allow any principal on a resource that has no ACL at all.", read_only=True),
    ConfigDef("quota.window.num", "INT", 11, "Samples kept to measure client quota rates.", minimum=1, read_only=True),
    ConfigDef("quota.window.size.seconds", "INT", 1, "Length of each client quota sample.", minimum=1, read_only=True),
)

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
    message = str(error)
    named = [n for n in _SETTING_NAMES if message.startswith(n)] or [n for n in _SETTING_NAMES if n in message]
    if named and named[0] in sources:
        return ConfigError(f"{message} (from {sources[named[0]]})")
    return error


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
        listeners = values["listeners"].strip() or f"PLAINTEXT://{host}:{port}"
        advertised = values.get("advertised.listeners", "").strip()
        if advertised and "://" not in advertised and "," not in listeners:
            advertised = f"{listeners.split('://')[0]}://{advertised}"
        listener_config = resolve_listeners(
            listeners, advertised, values["listener.security.protocol.map"], values["inter.broker.listener.name"],
            values["security.inter.broker.protocol"], default_host=host)
        mechanisms = tuple(m.strip() for m in values["sasl.enabled.mechanisms"].split(",") if m.strip())
        if any(e.security_protocol.uses_sasl for e in listener_config.listeners):
            unknown = [m for m in mechanisms if m not in SUPPORTED_MECHANISMS]
            if unknown or not mechanisms:
                raise ConfigError(f"sasl.enabled.mechanisms: {', '.join(unknown) or 'none'} not supported on a SASL "
                                  f"listener; supported: {', '.join(SUPPORTED_MECHANISMS)}")
        users_file = values["sasl.plain.users.file"].strip()
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
