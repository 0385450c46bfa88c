"""Who is asking, and on which listener: principals, security protocols, listener settings.

A ``KafkaPrincipal`` is what ACLs, quotas and logs name: ``User:alice`` after SASL, the TLS
client certificate's subject (``User:CN=client,O=acme``) on an SSL listener with client
authentication, ``User:ANONYMOUS`` otherwise. As in Kafka, a principal is a type and a name
separated by the first colon.

Listeners follow Kafka's settings and checks (KafkaConfig, SocketServerConfigs):

- ``listeners``: ``NAME://host:port,...``; an empty host listens on every interface.
- ``listener.security.protocol.map``: ``NAME:PROTOCOL,...``; by default each security protocol
  is also a listener name (``PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,
  SASL_SSL:SASL_SSL``).
- ``advertised.listeners``: what clients and other brokers are told, a subset of the listener
  names; ``listeners`` when empty.
- ``inter.broker.listener.name`` (or ``security.inter.broker.protocol``, not both): the
  listener brokers use to reach each other; must be advertised.

Every error is a ``ConfigError`` of one line that names the setting.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from tidelog.config import ConfigError

__all__ = [
    "ANONYMOUS",
    "WILDCARD_USER",
    "Endpoint",
    "KafkaPrincipal",
    "ListenerConfig",
    "SecurityProtocol",
    "parse_endpoints",
    "parse_protocol_map",
    "principal_from_certificate",
    "resolve_listeners",
]

USER_TYPE = "User"


@dataclass(frozen=True, slots=True)
class KafkaPrincipal:
    principal_type: str
    name: str

    def __str__(self) -> str:
        return f"{self.principal_type}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> "KafkaPrincipal":
        """``User:alice`` -> KafkaPrincipal("User", "alice"); splits at the first colon only."""
        if not text or ":" not in text:
            raise ValueError(f"expected a string in format principalType:principalName but got {text}")
        principal_type, name = text.split(":", 1)
        return cls(principal_type, name)

    @classmethod
    def user(cls, name: str) -> "KafkaPrincipal":
        return cls(USER_TYPE, name)


ANONYMOUS = KafkaPrincipal(USER_TYPE, "ANONYMOUS")
WILDCARD_USER = KafkaPrincipal(USER_TYPE, "*")  # in an ACL, matches every principal


class SecurityProtocol(enum.Enum):
    """Kafka's security protocols, with their ids."""

    PLAINTEXT = 0
    SSL = 1
    SASL_PLAINTEXT = 2
    SASL_SSL = 3

    @property
    def uses_sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)

    @property
    def uses_tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)


DEFAULT_PROTOCOL_MAP = ",".join(f"{p.name}:{p.name}" for p in SecurityProtocol)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One listener: ``host`` None means every interface (Kafka's empty host)."""

    listener_name: str
    security_protocol: SecurityProtocol
    host: str | None
    port: int

    def __str__(self) -> str:
        host = "" if self.host is None else (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{self.listener_name}://{host}:{self.port}"


@dataclass(frozen=True)
class ListenerConfig:
    """The resolved listener settings of a broker."""

    listeners: tuple[Endpoint, ...]
    advertised: tuple[Endpoint, ...]
    inter_broker_listener_name: str
    protocol_map: dict[str, SecurityProtocol]

    def listener(self, name: str) -> Endpoint:
        return next(e for e in self.listeners if e.listener_name == name)

    def advertised_for(self, listener_name: str) -> Endpoint:
        """Where a client that came in on ``listener_name`` is told brokers are."""
        return next(e for e in self.advertised if e.listener_name == listener_name)

    @property
    def inter_broker(self) -> Endpoint:
        return self.advertised_for(self.inter_broker_listener_name)


def _protocol(name: str, setting: str) -> SecurityProtocol:
    try:
        return SecurityProtocol[name.strip().upper()]
    except KeyError:
        raise ConfigError(f"Invalid security protocol `{name.strip()}` defined in {setting}") from None


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_protocol_map(text: str, setting: str = "listener.security.protocol.map") -> dict[str, SecurityProtocol]:
    """``NAME:PROTOCOL,...`` -> {NAME: protocol}; names are upper-cased, as Kafka normalises them."""
    result: dict[str, SecurityProtocol] = {}
    for item in _csv(text):
        name, sep, protocol = item.partition(":")
        if not sep or not name.strip() or ":" in protocol:
            raise ConfigError(f"{setting}: cannot parse {item!r}, expected NAME:PROTOCOL")
        result[name.strip().upper()] = _protocol(protocol, setting)
    return result


_ENDPOINT = re.compile(r"^(.*)://\[?([0-9a-zA-Z\-%._:]*)\]?:(-?[0-9]+)$")


def parse_endpoints(
    text: str, protocol_map: dict[str, SecurityProtocol], setting: str, require_distinct_ports: bool = True
) -> tuple[Endpoint, ...]:
    """Parse ``NAME://host:port,...`` as Kafka does; every name must be in ``protocol_map``."""
    endpoints = []
    for item in _csv(text):
        match = _ENDPOINT.match(item)
        if not match:
            raise ConfigError(f"{setting}: unable to parse {item!r} to a broker endpoint, expected NAME://host:port")
        name, host, port_text = match.group(1).upper(), match.group(2) or None, match.group(3)
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{setting}: port {port} of {item!r} is out of range 0-65535")
        protocol = protocol_map.get(name)
        if protocol is None:
            raise ConfigError(f"{setting}: no security protocol defined for listener {name} "
                              f"(name it in listener.security.protocol.map)")
        endpoints.append(Endpoint(name, protocol, host, port))
    names = [e.listener_name for e in endpoints]
    if len(set(names)) != len(names):
        raise ConfigError(f"{setting}: each listener must have a different name, listeners: {text}")
    if require_distinct_ports:
        _check_distinct_ports(endpoints, setting, text)
    return tuple(endpoints)


def _ip_version(host: str | None) -> int | None:
    try:
        return ipaddress.ip_address(host).version if host else None
    except ValueError:
        return None


def _check_distinct_ports(endpoints: list[Endpoint], setting: str, text: str) -> None:
    by_port: dict[int, list[Endpoint]] = {}
    for e in endpoints:
        if e.port != 0:  # port 0 picks a free port: never a clash
            by_port.setdefault(e.port, []).append(e)
    for port, same in by_port.items():
        if len(same) == 1:
            continue
        versions = sorted(_ip_version(e.host) or 0 for e in same)
        if versions != [4, 6]:  # Kafka's one exception: an IPv4 and an IPv6 address on one port
            raise ConfigError(f"{setting}: each listener must have a different port unless exactly one listener "
                              f"has an IPv4 address and the other an IPv6 address, listeners: {text}, port: {port}")


def resolve_listeners(
    listeners: str,
    advertised_listeners: str = "",
    protocol_map: str = DEFAULT_PROTOCOL_MAP,
    inter_broker_listener_name: str = "",
    security_inter_broker_protocol: str = "",
    default_host: str | None = None,
) -> ListenerConfig:
    """Check the listener settings together, as KafkaConfig does; return them resolved.

    ``default_host`` replaces an empty host in the advertised endpoints (a client cannot
    connect to "every interface"); when None, such an endpoint keeps no host.
    """
    mapping = parse_protocol_map(protocol_map)
    bound = parse_endpoints(listeners, mapping, "listeners")
    if not bound:
        raise ConfigError("listeners: at least one listener is needed, e.g. PLAINTEXT://:9092")
    if advertised_listeners.strip():
        advertised = parse_endpoints(advertised_listeners, mapping, "advertised.listeners", require_distinct_ports=False)
    else:
        advertised = bound
    if default_host is not None:
        advertised = tuple(e if e.host else Endpoint(e.listener_name, e.security_protocol, default_host, e.port)
                           for e in advertised)
    bound_names = [e.listener_name for e in bound]
    advertised_names = [e.listener_name for e in advertised]
    if not set(advertised_names) <= set(bound_names):
        raise ConfigError(
            f"advertised.listeners listener names must be equal to or a subset of the ones defined in listeners. "
            f"Found {','.join(advertised_names)}. The valid options based on the current configuration are "
            f"{','.join(bound_names)}")
    if any(e.host == "0.0.0.0" for e in advertised):
        raise ConfigError("advertised.listeners cannot use the nonroutable meta-address 0.0.0.0. Use a routable IP address.")
    if inter_broker_listener_name.strip() and security_inter_broker_protocol.strip():
        raise ConfigError("Only one of inter.broker.listener.name and security.inter.broker.protocol should be set.")
    if inter_broker_listener_name.strip():
        inter_broker = inter_broker_listener_name.strip().upper()
        if inter_broker not in mapping:
            raise ConfigError(f"Listener with name {inter_broker} defined in inter.broker.listener.name not found in "
                              f"listener.security.protocol.map.")
    else:
        inter_broker = _protocol(security_inter_broker_protocol or "PLAINTEXT", "security.inter.broker.protocol").name
        if not security_inter_broker_protocol.strip() and inter_broker not in advertised_names and len(advertised) == 1:
            # Tidelog's convenience: with one listener and neither setting, brokers use that listener.
            inter_broker = advertised_names[0]
    if inter_broker not in advertised_names:
        raise ConfigError(
            f"inter.broker.listener.name must be a listener name defined in advertised.listeners. The valid options "
            f"based on currently configured listeners are {','.join(advertised_names)}")
    return ListenerConfig(bound, advertised, inter_broker, mapping)


# RFC 2253 short names, as Java's X500Principal.getName() writes them; Python's ssl module
# gives the long names.
_DN_SHORT_NAMES = {
    "commonName": "CN", "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST",
    "organizationName": "O", "organizationalUnitName": "OU", "streetAddress": "STREET",
    "domainComponent": "DC", "userId": "UID",
}


def _escape_dn_value(value: str) -> str:
    escaped = re.sub(r'([,+"\\<>;])', r"\\\1", value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def principal_from_certificate(peer_cert: dict | None) -> KafkaPrincipal:
    """The principal of a TLS client: ``User:`` + its certificate's subject in RFC 2253 form.

    This is Kafka's default (``ssl.principal.mapping.rules=DEFAULT``): the distinguished name,
    most specific part first (``CN=client,OU=eng,O=acme,C=US``). ``peer_cert`` is what
    ``SSLObject.getpeercert()`` returns; without a certificate the principal is ANONYMOUS.
    """
    if not peer_cert or not peer_cert.get("subject"):
        return ANONYMOUS
    rdns = []
    for rdn in reversed(peer_cert["subject"]):
        rdns.append("+".join(f"{_DN_SHORT_NAMES.get(key, key)}={_escape_dn_value(value)}" for key, value in rdn))
    return KafkaPrincipal(USER_TYPE, ",".join(rdns))
