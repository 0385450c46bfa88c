"""The etcd.* settings: TLS files are checked at start with one message naming the setting, and
the endpoints of etcd:// become https once TLS is set (the connection itself: test_etcd_security)."""

from __future__ import annotations

import pytest
import trustme

from tidelog.cluster.etcd_store import EtcdClient, EtcdSecurity


def test_plain_http_without_tls_settings():
    assert EtcdSecurity().ssl_context() is None
    assert EtcdClient(["http://127.0.0.1:2379"]).endpoints == ["http://127.0.0.1:2379"]


def test_https_with_a_ca(tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = EtcdClient(["http://127.0.0.1:2379", "http://127.0.0.1:2380"], security=EtcdSecurity(str(tmp_path / "ca.pem")))
    assert client.endpoints == ["https://127.0.0.1:2379", "https://127.0.0.1:2380"]


@pytest.mark.parametrize("security, setting", [
    (EtcdSecurity(ca_file="/nonexistent/ca.pem"), "etcd.ssl.ca.location"),
    (EtcdSecurity(cert_file="/nonexistent/client.pem"), "etcd.ssl.certificate.location"),
])
def test_a_missing_file_names_its_setting(security, setting):
    with pytest.raises(ValueError, match=setting):
        security.ssl_context()


def test_a_key_without_a_certificate_is_refused(tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with pytest.raises(ValueError, match="etcd.ssl.key.location"):
        EtcdSecurity(str(tmp_path / "ca.pem"), key_file=str(tmp_path / "key.pem")).ssl_context()


def test_a_missing_file_names_where_its_setting_came_from(tmp_path):
    from tidelog.config import BrokerConfig

    config_file = tmp_path / "broker.toml"
    config_file.write_text('"etcd.ssl.ca.location" = "/nonexistent/ca.pem"\n')
    config = BrokerConfig.load(config_file=config_file, env={})
    with pytest.raises(ValueError, match=rf"etcd.ssl.ca.location \(in {config_file}\): cannot load /nonexistent/ca.pem"):
        EtcdSecurity.from_config(config).ssl_context()
