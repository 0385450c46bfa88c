"""The security settings: defaults keep today's start, errors are one line naming setting and source."""

from __future__ import annotations

import pytest

from tidelog.config import BROKER_CONFIGS, SECURITY_CONFIGS, BrokerConfig, ConfigError
from tidelog.security.principal import DEFAULT_PROTOCOL_MAP, Endpoint, SecurityProtocol
from tidelog.security.sasl import MAX_RECEIVE_SIZE_BEFORE_AUTHENTICATION
from tidelog.security.sasl_mechanisms import SUPPORTED_MECHANISMS
from tidelog.security.scram_credentials import InMemoryCredentialStore
from tidelog.security.settings import SecuritySettings, parse_super_users


def values(**overrides):
    """Resolved values as BrokerConfig.load makes them."""
    defs = {d.name: d for d in SECURITY_CONFIGS}
    result = {name: d.default for name, d in defs.items()}
    result["advertised.listeners"] = BROKER_CONFIGS["advertised.listeners"].default
    for name, raw in overrides.items():
        name = name.replace("_", ".")
        result[name] = defs[name].parse(raw) if name in defs else raw
    return result


def test_settings_are_broker_settings_with_the_security_modules_defaults():
    names = [d.name for d in SECURITY_CONFIGS]
    assert len(names) == len(set(names))
    assert all(BROKER_CONFIGS[name] is d for name, d in zip(names, SECURITY_CONFIGS))
    assert all(d.read_only for d in SECURITY_CONFIGS)
    assert BROKER_CONFIGS["listener.security.protocol.map"].default == DEFAULT_PROTOCOL_MAP
    assert BROKER_CONFIGS["sasl.enabled.mechanisms"].default == ",".join(SUPPORTED_MECHANISMS)
    assert BROKER_CONFIGS["sasl.server.max.receive.size"].default == MAX_RECEIVE_SIZE_BEFORE_AUTHENTICATION


def test_a_broker_config_error_names_the_option_it_came_from():
    config = BrokerConfig.load(env={}, overrides={"listeners": "CLIENT://:9093"})
    with pytest.raises(ConfigError) as raised:
        SecuritySettings.from_config(config.values, config.origins)
    assert str(raised.value) == ("listeners: no security protocol defined for listener CLIENT (name it in "
                                 "listener.security.protocol.map) (from --set)")


def test_tls_listener_settings(tmp_path):
    with pytest.raises(ConfigError, match="^ssl.keystore.location: the TLS listener SSL needs a PEM file"):
        SecuritySettings.from_config(values(listeners="SSL://:9093"))
    with pytest.raises(ConfigError, match="^ssl.client.auth: required needs ssl.truststore.location"):
        SecuritySettings.from_config(values(listeners="SSL://:9093", ssl_keystore_location="k.pem",
                                            ssl_client_auth="required"))
    tls = SecuritySettings.from_config(values(listeners="SSL://:9093,PLAINTEXT://:9092", ssl_keystore_location="k.pem",
                                              ssl_truststore_location="ca.pem", ssl_client_auth="requested",
                                              ssl_enabled_protocols="TLSv1.3")).tls
    assert (str(tls.keystore), str(tls.truststore), tls.client_auth, tls.protocols) == (
        "k.pem", "ca.pem", "requested", ("TLSv1.3",))
    assert SecuritySettings.from_config(values()).tls is None


def test_defaults_are_todays_single_plaintext_listener():
    settings = SecuritySettings.from_config(values(), host="127.0.0.1", port=9092)
    assert settings.listeners.listeners == (Endpoint("PLAINTEXT", SecurityProtocol.PLAINTEXT, "127.0.0.1", 9092),)
    assert settings.listeners.inter_broker_listener_name == "PLAINTEXT"
    assert settings.authorizer() is None and not settings.authorizer_enabled
    assert settings.sasl_enabled_mechanisms == ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    assert settings.max_reauth_ms == 0 and settings.sasl_max_receive_bytes == 524288
    assert (settings.quota_window_num, settings.quota_window_size_seconds) == (11, 1)


def test_advertised_host_port_without_a_name_keeps_working():
    settings = SecuritySettings.from_config(values(advertised_listeners="node1:9092"), host="0.0.0.0", port=9092)
    assert settings.listeners.advertised_for("PLAINTEXT") == Endpoint("PLAINTEXT", SecurityProtocol.PLAINTEXT, "node1", 9092)


def test_a_secured_broker():
    settings = SecuritySettings.from_config(values(
        listeners="CLIENTS://:9093,BROKERS://:9094",
        listener_security_protocol_map="CLIENTS:SASL_SSL,BROKERS:SASL_PLAINTEXT",
        inter_broker_listener_name="BROKERS",
        sasl_enabled_mechanisms="SCRAM-SHA-512",
        connections_max_reauth_ms="3600000",
        authorizer_class_name="org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        super_users="User:admin; User:broker",
        ssl_keystore_location="/etc/tidelog/broker.pem",
    ), host="10.1.1.1")
    assert settings.listeners.inter_broker.host == "10.1.1.1"
    assert settings.super_users == {"User:admin", "User:broker"}
    authorizer = settings.authorizer()
    assert authorizer is not None and authorizer.super_users == {"User:admin", "User:broker"}
    assert settings.sasl_mechanisms(InMemoryCredentialStore()).enabled == ("SCRAM-SHA-512",)
    assert settings.quota_managers().produce.window_ms == 1000


def test_plain_users_file_is_read(tmp_path):
    path = tmp_path / "users"
    path.write_text("alice:secret\n")
    path.chmod(0o600)
    settings = SecuritySettings.from_config(values(sasl_plain_users_file=str(path)))
    assert settings.sasl_mechanisms(InMemoryCredentialStore()).plain_passwords("alice", "secret")


@pytest.mark.parametrize("overrides, sources, message", [
    (dict(listeners="SSL://:9093", listener_security_protocol_map="SSL:TLS"), {"listener.security.protocol.map": "file"},
     "Invalid security protocol `TLS` defined in listener.security.protocol.map (from file)"),
    (dict(listeners="PLAINTEXT//:9093"), {"listeners": "flag"},
     "listeners: unable to parse 'PLAINTEXT//:9093' to a broker endpoint, expected NAME://host:port (from flag)"),
    (dict(listeners="SASL_SSL://:9093", sasl_enabled_mechanisms="GSSAPI"), {"sasl.enabled.mechanisms": "env"},
     "sasl.enabled.mechanisms: GSSAPI not supported on a SASL listener; supported: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (from env)"),
    (dict(advertised_listeners="SSL://h:1"), {"advertised.listeners": "flag", "listeners": "file"},
     "advertised.listeners listener names must be equal to or a subset of the ones defined in listeners. Found SSL. "
     "The valid options based on the current configuration are PLAINTEXT (from flag)"),
    (dict(super_users="admin"), {},
     "super.users: expected a string in format principalType:principalName but got admin"),
])
def test_errors_are_one_line_with_the_setting_and_its_source(overrides, sources, message):
    with pytest.raises(ConfigError) as raised:
        SecuritySettings.from_config(values(**overrides), sources)
    assert str(raised.value) == message


def test_an_unknown_authorizer_class_is_refused_by_its_config_def():
    with pytest.raises(ConfigError, match="authorizer.class.name: 'com.example.Auth' is not one of"):
        values(authorizer_class_name="com.example.Auth")


def test_mechanisms_are_not_checked_without_a_sasl_listener():
    assert SecuritySettings.from_config(values(sasl_enabled_mechanisms="GSSAPI")).sasl_enabled_mechanisms == ("GSSAPI",)
    assert parse_super_users(" ; User:a ;") == {"User:a"}
