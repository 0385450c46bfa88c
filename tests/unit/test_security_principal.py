"""Principals and listener settings, checked as Kafka's KafkaConfig checks them."""

from __future__ import annotations

import pytest

from tidelog.config import ConfigError
from tidelog.security.principal import (
    ANONYMOUS,
    Endpoint,
    KafkaPrincipal,
    SecurityProtocol,
    parse_protocol_map,
    principal_from_certificate,
    resolve_listeners,
)


def test_principal_parses_at_the_first_colon():
    assert KafkaPrincipal.parse("User:alice") == KafkaPrincipal("User", "alice")
    assert KafkaPrincipal.parse("User:CN=a:b") == KafkaPrincipal("User", "CN=a:b")
    assert str(KafkaPrincipal.user("bob")) == "User:bob"
    assert str(ANONYMOUS) == "User:ANONYMOUS"
    for bad in ("", "alice"):
        with pytest.raises(ValueError, match="expected a string in format principalType:principalName"):
            KafkaPrincipal.parse(bad)


def test_single_plaintext_listener_is_the_default_shape():
    config = resolve_listeners("PLAINTEXT://:9092", default_host="127.0.0.1")
    assert config.listeners == (Endpoint("PLAINTEXT", SecurityProtocol.PLAINTEXT, None, 9092),)
    assert config.advertised == (Endpoint("PLAINTEXT", SecurityProtocol.PLAINTEXT, "127.0.0.1", 9092),)
    assert config.inter_broker_listener_name == "PLAINTEXT"
    assert str(config.listeners[0]) == "PLAINTEXT://:9092"


def test_several_listeners_with_custom_names():
    config = resolve_listeners(
        "INTERNAL://127.0.0.1:9092,external://[::1]:9093",
        advertised_listeners="INTERNAL://broker1:9092,EXTERNAL://public.example:9093",
        protocol_map="INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL",
        inter_broker_listener_name="internal",
    )
    assert [e.listener_name for e in config.listeners] == ["INTERNAL", "EXTERNAL"]
    assert config.listener("EXTERNAL").host == "::1"
    assert str(config.listener("EXTERNAL")) == "EXTERNAL://[::1]:9093"
    assert config.advertised_for("EXTERNAL") == Endpoint("EXTERNAL", SecurityProtocol.SASL_SSL, "public.example", 9093)
    assert config.inter_broker == Endpoint("INTERNAL", SecurityProtocol.SASL_PLAINTEXT, "broker1", 9092)
    assert SecurityProtocol.SASL_SSL.uses_sasl and SecurityProtocol.SASL_SSL.uses_tls
    assert not SecurityProtocol.SSL.uses_sasl and not SecurityProtocol.SASL_PLAINTEXT.uses_tls


def test_a_single_listener_is_the_inter_broker_listener_when_none_is_named():
    assert resolve_listeners("SASL_SSL://:9093").inter_broker_listener_name == "SASL_SSL"


def test_security_inter_broker_protocol_names_a_default_listener():
    config = resolve_listeners("PLAINTEXT://:9092,SSL://:9093", security_inter_broker_protocol="SSL")
    assert config.inter_broker_listener_name == "SSL"


def test_ipv4_and_ipv6_may_share_a_port():
    config = resolve_listeners("PLAINTEXT://127.0.0.1:9092,SSL://[::1]:9092")
    assert {e.port for e in config.listeners} == {9092}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(listeners="PLAINTEXT:/:9092"), r"^listeners: unable to parse 'PLAINTEXT:/:9092' to a broker endpoint"),
        (dict(listeners="PLAINTEXT://:99999"), r"^listeners: port 99999 of 'PLAINTEXT://:99999' is out of range"),
        (dict(listeners="CLIENT://:9092"), r"^listeners: no security protocol defined for listener CLIENT"),
        (dict(listeners="PLAINTEXT://:9092,plaintext://:9093"), r"^listeners: each listener must have a different name"),
        (dict(listeners="PLAINTEXT://:9092,SSL://:9092"), r"^listeners: each listener must have a different port"),
        (dict(listeners="PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.2:9092"), r"^listeners: each listener must have"),
        (dict(listeners=""), r"^listeners: at least one listener is needed"),
        (dict(listeners="A://:1", protocol_map="A"), r"^listener.security.protocol.map: cannot parse 'A'"),
        (dict(listeners="A://:1", protocol_map="A:TLS"), r"^Invalid security protocol `TLS` defined in listener.security.protocol.map$"),
        (dict(listeners="PLAINTEXT://:9092", advertised_listeners="SSL://h:9093"),
         r"^advertised.listeners listener names must be equal to or a subset of the ones defined in listeners. "
         r"Found SSL. The valid options based on the current configuration are PLAINTEXT$"),
        (dict(listeners="PLAINTEXT://:9092", advertised_listeners="PLAINTEXT://0.0.0.0:9092"),
         r"^advertised.listeners cannot use the nonroutable meta-address 0.0.0.0"),
        (dict(listeners="PLAINTEXT://:9092", inter_broker_listener_name="PLAINTEXT", security_inter_broker_protocol="SSL"),
         r"^Only one of inter.broker.listener.name and security.inter.broker.protocol should be set.$"),
        (dict(listeners="PLAINTEXT://:9092", inter_broker_listener_name="REPLICATION"),
         r"^Listener with name REPLICATION defined in inter.broker.listener.name not found in listener.security.protocol.map.$"),
        (dict(listeners="PLAINTEXT://:9092,SSL://:9093", inter_broker_listener_name="SASL_SSL"),
         r"^inter.broker.listener.name must be a listener name defined in advertised.listeners. The valid options "
         r"based on currently configured listeners are PLAINTEXT,SSL$"),
        (dict(listeners="PLAINTEXT://:9092,SSL://:9093", security_inter_broker_protocol="SASL_SSL"),
         r"^inter.broker.listener.name must be a listener name"),
        (dict(listeners="PLAINTEXT://:9092", security_inter_broker_protocol="TLS"),
         r"^Invalid security protocol `TLS` defined in security.inter.broker.protocol$"),
    ],
)
def test_bad_listener_settings_are_one_line_naming_the_setting(kwargs, message):
    with pytest.raises(ConfigError, match=message) as raised:
        resolve_listeners(**kwargs)
    assert "\n" not in str(raised.value)


def test_protocol_map_default_names_every_protocol():
    assert parse_protocol_map("PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL") == {
        p.name: p for p in SecurityProtocol
    }
    assert parse_protocol_map(" internal : sasl_ssl ") == {"INTERNAL": SecurityProtocol.SASL_SSL}


def test_certificate_subject_becomes_an_rfc2253_principal():
    cert = {"subject": ((("countryName", "US"),), (("organizationName", "Acme, Inc."),),
                        (("organizationalUnitName", "eng"), ("userId", "7")), (("commonName", " client#1"),))}
    assert principal_from_certificate(cert) == KafkaPrincipal("User", r"CN=\ client#1,OU=eng+UID=7,O=Acme\, Inc.,C=US")
    assert principal_from_certificate(None) == ANONYMOUS
    assert principal_from_certificate({}) == ANONYMOUS
