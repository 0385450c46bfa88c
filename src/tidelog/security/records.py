"""SCRAM credentials, ACL bindings and client quotas kept as records of the metadata store.

The metadata store (embedded file or etcd, cluster/metadata.py) keeps ``security``: record
kind -> key -> JSON, and changes one kind's records at once with ``alter_security``, telling
its listeners ``("security", kind)``. ``SecurityRecords`` is the ``CredentialStore``,
``AclStore`` and ``QuotaStore`` the security modules use, over those records:

- ``scram``: key ``<mechanism>/<user>`` (``SCRAM-SHA-256/alice``), value the credential as
  Kafka keeps it (salt, iterations, stored key, server key; never the password).
- ``acls``: key a digest of the binding, value the binding (docs/security.md has the format).
- ``quotas``: key the entity as JSON, value ``{"entity": {...}, "values": {...}}``.

Reads come from the store's memory; not thread-safe, the event loop owns it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

from tidelog.security.acl import AclBinding
from tidelog.security.quotas import QuotaEntity
from tidelog.security.scram_credentials import ScramCredential, ScramMechanism

SCRAM, ACLS, QUOTAS = "scram", "acls", "quotas"


class RecordStore(Protocol):
    security: dict[str, dict[str, dict]]

    async def alter_security(self, kind: str, puts: dict[str, dict], deletes: list[str]) -> None: ...


def _acl_key(binding: AclBinding) -> str:
    return hashlib.sha256(json.dumps(binding.to_json(), sort_keys=True).encode()).hexdigest()[:32]


def _quota_key(entity: QuotaEntity) -> str:
    return json.dumps(entity.to_json(), sort_keys=True)


class SecurityRecords:
    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def _records(self, kind: str) -> dict[str, dict]:
        return self.store.security.get(kind, {})

    # --- CredentialStore ------------------------------------------------------------------
    def scram_credential(self, user: str, mechanism: ScramMechanism) -> ScramCredential | None:
        record = self._records(SCRAM).get(f"{mechanism.mechanism_name}/{user}")
        return ScramCredential.from_json(record) if record is not None else None

    def scram_credentials(self) -> Mapping[str, Mapping[ScramMechanism, ScramCredential]]:
        result: dict[str, dict[ScramMechanism, ScramCredential]] = {}
        for key, record in self._records(SCRAM).items():
            name, _, user = key.partition("/")
            mechanism = ScramMechanism.from_name(name)
            if mechanism is not None:
                result.setdefault(user, {})[mechanism] = ScramCredential.from_json(record)
        return result

    async def alter_scram_credentials(self, upsertions: Mapping[tuple[str, ScramMechanism], ScramCredential],
                                      deletions: Iterable[tuple[str, ScramMechanism]]) -> None:
        puts = {f"{m.mechanism_name}/{user}": c.to_json() for (user, m), c in upsertions.items()}
        await self.store.alter_security(SCRAM, puts, [f"{m.mechanism_name}/{user}" for user, m in deletions])

    @property
    def has_users(self) -> bool:
        return bool(self._records(SCRAM))

    # --- AclStore -------------------------------------------------------------------------
    def acl_bindings(self) -> Collection[AclBinding]:
        return [AclBinding.from_json(record) for record in self._records(ACLS).values()]

    async def create_acls(self, bindings: Sequence[AclBinding]) -> None:
        await self.store.alter_security(ACLS, {_acl_key(b): b.to_json() for b in bindings}, [])

    async def delete_acls(self, bindings: Collection[AclBinding]) -> None:
        await self.store.alter_security(ACLS, {}, [_acl_key(b) for b in bindings])

    # --- QuotaStore -----------------------------------------------------------------------
    def client_quotas(self) -> Mapping[QuotaEntity, Mapping[str, float]]:
        return {QuotaEntity.from_json(r["entity"]): dict(r["values"]) for r in self._records(QUOTAS).values()}

    async def alter_client_quotas(self, changes: Mapping[QuotaEntity, Mapping[str, float | None]]) -> None:
        current = self.client_quotas()
        puts: dict[str, dict] = {}
        deletes: list[str] = []
        for entity, values in changes.items():
            merged = dict(current.get(entity, {}))
            for key, value in values.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            if merged:
                puts[_quota_key(entity)] = {"entity": entity.to_json(), "values": merged}
            else:
                deletes.append(_quota_key(entity))
        await self.store.alter_security(QUOTAS, puts, deletes)
