"""``GET /api/v1/users``, ``/acls`` and ``/quotas``: the security set-up, read-only, for curl and the
console's security page (docs/security.md).

Users are the SCRAM users of the metadata store with their mechanisms and iteration counts, never
a salt, key or password (a ``sasl.plain.users.file`` is only said to be in use); ACLs are the
bindings the authorizer holds, with whether ACLs are on, the super users and
``allow.everyone.if.no.acl.found``; quotas are the client quotas by entity (a null name is the
default). The metadata store is the cluster's, so every broker answers alike. Each needs DESCRIBE
on the cluster when ACLs are on (http/auth.py ``ROUTE_ACLS``). Changes go through Kafka's APIs
(``tidelog users|acls``, ``kafka-client-quotas``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

__all__ = ["SecurityRoutes"]


class SecurityRoutes:
    def __init__(self, broker: "Broker") -> None:
        self.broker = broker

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        router.add_get(prefix + "/users", self.users)
        router.add_get(prefix + "/acls", self.acls)
        router.add_get(prefix + "/quotas", self.quotas)

    async def users(self, _request: web.Request) -> web.Response:
        credentials = self.broker.security_records.scram_credentials()
        return web.json_response({
            "users": [{"name": name, "mechanisms": [
                {"mechanism": mechanism.mechanism_name, "iterations": credential.iterations}
                for mechanism, credential in sorted(by_mechanism.items(), key=lambda kv: kv[0].value)]}
                for name, by_mechanism in sorted(credentials.items())],
            "plain_users_file": bool(self.broker.security.plain_users_file),
            "sasl_mechanisms": list(self.broker.security.sasl_enabled_mechanisms),
        })

    async def acls(self, _request: web.Request) -> web.Response:
        authorizer = self.broker.authorizer
        bindings = sorted((b.to_json() for b in self.broker.security_records.acl_bindings()),
                          key=lambda b: (b["resource_type"], b["name"], b["pattern_type"], b["principal"], b["operation"]))
        return web.json_response({
            "enabled": authorizer is not None,
            "super_users": sorted(authorizer.super_users) if authorizer is not None else [],
            "allow_everyone_if_no_acl_found": authorizer.allow_everyone_if_no_acl_found if authorizer else None,
            "acls": bindings,
        })

    async def quotas(self, _request: web.Request) -> web.Response:
        quotas = self.broker.security_records.client_quotas()
        rows = [{"entity": entity.as_dict(), "values": dict(sorted(values.items()))}
                for entity, values in quotas.items()]
        rows.sort(key=lambda r: sorted((k, v or "") for k, v in r["entity"].items()))
        return web.json_response({"quotas": rows})
