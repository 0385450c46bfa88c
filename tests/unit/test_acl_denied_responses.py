"""A request refused as a whole by an ACL is answered with its own API's response, encodable at
every version we serve, the error in each error_code and one result per item asked for."""

from __future__ import annotations

import dataclasses

import kio.schema.alter_user_scram_credentials.v0.request as alter_scram
import kio.schema.create_acls.v3.request as create_acls
import kio.schema.offset_commit.v9.request as offset_commit

from tidelog.handlers.authorization import denied_response
from tidelog.handlers.registry import load_all
from tidelog.protocol.errors import ErrorCode
from tidelog.security.api_authorization import request_checks
from tidelog.server.connection import encode_response

DENIED = ErrorCode.cluster_authorization_failed


def _error_codes(value) -> list:
    if isinstance(value, tuple):
        return [code for item in value for code in _error_codes(item)]
    if dataclasses.is_dataclass(value):
        return [code for f in dataclasses.fields(value) for code in
                ([getattr(value, f.name)] if f.name == "error_code" else _error_codes(getattr(value, f.name)))]
    return []


def test_every_centrally_checked_api_and_version_has_an_encodable_denial():
    checked = {key: api for key, api in load_all().items() if request_checks(key)}
    assert {11, 12, 13, 14, 29, 30, 31, 50, 51} <= set(checked)
    for key, api in checked.items():
        for version in range(api.min_version, api.max_version + 1):
            response = denied_response(key, version, object(), DENIED)
            encode_response(response)
            assert set(_error_codes(response)) <= {DENIED}, (api.name, version)


def test_results_answer_each_item_asked_for():
    creation = create_acls.AclCreation(resource_type=2, resource_name="t", resource_pattern_type=3,
                                       principal="User:a", host="*", operation=4, permission_type=3)
    response = denied_response(30, 3, create_acls.CreateAclsRequest(creations=(creation, creation)), DENIED)
    assert [r.error_code for r in response.results] == [DENIED, DENIED]
    request = alter_scram.AlterUserScramCredentialsRequest(
        deletions=(alter_scram.ScramCredentialDeletion(name="a", mechanism=1),),
        upsertions=(alter_scram.ScramCredentialUpsertion(name="b", mechanism=1, iterations=4096, salt=b"s" * 12,
                                                         salted_password=b"p"),))
    assert [(r.user, r.error_code) for r in denied_response(51, 0, request, DENIED).results] == [("a", DENIED), ("b", DENIED)]
    commit = offset_commit.OffsetCommitRequest(
        group_id="g", generation_id_or_member_epoch=1, member_id="m", group_instance_id=None,
        topics=(offset_commit.OffsetCommitRequestTopic(name="t", partitions=(
            offset_commit.OffsetCommitRequestPartition(partition_index=3, committed_offset=5, committed_leader_epoch=-1,
                                                       committed_metadata=None),)),))
    group_denied = ErrorCode.group_authorization_failed
    response = denied_response(8, 9, commit, group_denied)
    assert [(t.name, [(p.partition_index, p.error_code) for p in t.partitions]) for t in response.topics] == [
        ("t", [(3, group_denied)])]
