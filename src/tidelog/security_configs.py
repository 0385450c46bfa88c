"""The security settings' definitions (docs/security.md), Kafka's names, part of the broker's
settings (``tidelog.config.BROKER_CONFIGS``; importable from ``tidelog.config`` too).

security/settings.py checks them together; the defaults name what security/ defines (the
protocol map, the mechanisms, the pre-authentication frame limit), and
tests/unit/test_security_settings.py checks they agree.
"""

from __future__ import annotations

from tidelog.config_def import ConfigDef

__all__ = ["SECURITY_CONFIGS"]

SECURITY_CONFIGS: tuple[ConfigDef, ...] = (
    ConfigDef("listeners", "STRING", "",
              "NAME://host:port,... to listen on (an empty host: every interface); empty: PLAINTEXT on --host/--port.",
              read_only=True),
    ConfigDef("listener.security.protocol.map", "STRING",
              "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
              "NAME:PROTOCOL,... (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) for each listener name.", read_only=True),
    ConfigDef("inter.broker.listener.name", "STRING", "",
              "The listener brokers reach each other on; empty: the single listener (or security.inter.broker.protocol's).",
              read_only=True),
    ConfigDef("security.inter.broker.protocol", "STRING", "",
              "Instead of inter.broker.listener.name: the listener named after this protocol.", read_only=True),
    ConfigDef("ssl.keystore.type", "STRING", "PEM", "Format of ssl.keystore.location (PEM only).", choices=("PEM",),
              read_only=True),
    ConfigDef("ssl.keystore.location", "STRING", "",
              "PEM file with this broker's certificate chain and private key, for SSL and SASL_SSL listeners; "
              "re-read when it changes.", read_only=True),
    ConfigDef("ssl.key.password", "PASSWORD", "", "Password of the private key in ssl.keystore.location, if encrypted.",
              read_only=True),
    ConfigDef("ssl.truststore.type", "STRING", "PEM", "Format of ssl.truststore.location (PEM only).", choices=("PEM",),
              read_only=True),
    ConfigDef("ssl.truststore.location", "STRING", "",
              "PEM file of the CA certificates client certificates are checked against (ssl.client.auth).",
              read_only=True),
    ConfigDef("ssl.client.auth", "STRING", "none",
              "Client certificates on SSL listeners: none, requested (checked when sent) or required.",
              choices=("none", "requested", "required"), read_only=True),
    ConfigDef("ssl.enabled.protocols", "LIST", "TLSv1.2,TLSv1.3", "TLS versions accepted.",
              choices=("TLSv1.2", "TLSv1.3"), read_only=True),
    ConfigDef("ssl.cipher.suites", "LIST", "", "TLS 1.2 cipher suites (OpenSSL names); empty: OpenSSL's defaults.",
              read_only=True),
    ConfigDef("sasl.enabled.mechanisms", "LIST", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
              "SASL mechanisms offered on SASL listeners.", read_only=True),
    ConfigDef("sasl.plain.users.file", "STRING", "",
              "PLAIN users as username:password lines; empty: PLAIN checks the SCRAM credentials.", read_only=True),
    ConfigDef("sasl.server.max.receive.size", "INT", 524288,
              "Largest frame accepted before a client has authenticated.", minimum=1, read_only=True),
    ConfigDef("connections.max.reauth.ms", "LONG", 0,
              "SASL sessions last this long; clients re-authenticate (KIP-368) or are disconnected. 0: forever.",
              minimum=0, read_only=True),
    ConfigDef("connection.failed.authentication.delay.ms", "INT", 100,
              "How long a connection whose authentication failed is held before it is closed.", minimum=0,
              read_only=True),
    ConfigDef("authorizer.class.name", "STRING", "", "A Kafka authorizer class name turns ACLs on; empty: off.",
              choices=("", "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                       "kafka.security.authorizer.AclAuthorizer"), read_only=True),
    ConfigDef("super.users", "STRING", "", "Principals allowed everything, separated by ';' (User:admin;User:broker).",
              read_only=True),
    ConfigDef("allow.everyone.if.no.acl.found", "BOOLEAN", False,
              "Allow any principal on a resource that has no ACL at all.", read_only=True),
    ConfigDef("quota.window.num", "INT", 11, "Samples kept to measure client quota rates.", minimum=1, read_only=True),
    ConfigDef("quota.window.size.seconds", "INT", 1, "Length of each client quota sample.", minimum=1, read_only=True),
    ConfigDef("sasl.mechanism.inter.broker.protocol", "STRING", "SCRAM-SHA-512",
              "SASL mechanism brokers use with each other on a SASL inter-broker listener.",
              choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), read_only=True),
    ConfigDef("inter.broker.sasl.username", "STRING", "",
              "The user brokers authenticate as on a SASL inter-broker listener (make it a super user, "
              "or give it CLUSTER_ACTION on the cluster).", read_only=True),
    ConfigDef("inter.broker.sasl.password", "PASSWORD", "", "That user's password.", read_only=True),
    ConfigDef("etcd.ssl.ca.location", "STRING", "",
              "Cluster: PEM file of the CAs etcd's certificate is checked against; set, etcd is reached over "
              "https (the system's CAs with etcd.ssl.certificate.location alone).", read_only=True),
    ConfigDef("etcd.ssl.certificate.location", "STRING", "",
              "Cluster: PEM client certificate this broker shows etcd (etcd's --client-cert-auth).", read_only=True),
    ConfigDef("etcd.ssl.key.location", "STRING", "",
              "Cluster: PEM private key of etcd.ssl.certificate.location (empty: in the same file).", read_only=True),
    ConfigDef("etcd.username", "STRING", "", "Cluster: the etcd user (etcd auth enabled); empty: none.",
              read_only=True),
    ConfigDef("etcd.password", "PASSWORD", "", "Cluster: that etcd user's password.", read_only=True),
    ConfigDef("http.ssl.enable", "BOOLEAN", False,
              "Serve the HTTP side (console, API, /metrics) over TLS with ssl.keystore.location.", read_only=True),
    ConfigDef("http.health.metrics.open", "BOOLEAN", True,
              "/health, /ready and /metrics answer without authentication when the broker has users.",
              read_only=True),
    ConfigDef("http.bearer.tokens.file", "STRING", "",
              "Bearer tokens the HTTP API accepts, one '<token> User:<name>' a line; re-read when it changes.",
              read_only=True),
)
