"""Kafka's security model, as modules the connection and the handlers call.

- ``principal``: who is asking (``KafkaPrincipal``), listeners and their security protocols.
- ``sasl``: one connection's SASL states (handshake, authenticate, re-authenticate), sans-I/O.
- ``sasl_mechanisms``: SASL PLAIN and SCRAM-SHA-256/512 as sans-I/O mechanisms, PLAIN's password checks.
- ``scram_credentials``: SCRAM credentials, their store protocol, DescribeUserScramCredentials and
  AlterUserScramCredentials.
- ``acl``: ACL bindings and filters, CreateAcls/DescribeAcls/DeleteAcls semantics.
- ``authorizer``: StandardAuthorizer's evaluation (deny wins, super users, implied operations).
- ``api_authorization``: which operation on which resource each Kafka API needs.
- ``quotas``: client quota entities, Kafka's sampled rates and throttle times,
  DescribeClientQuotas/AlterClientQuotas semantics.
- ``settings``: the broker settings of all of the above, parsed and checked in one place.

Nothing here does I/O or imports the server, the handlers or the stores: state lives in the
metadata store, which implements the small store protocols declared here.
"""
