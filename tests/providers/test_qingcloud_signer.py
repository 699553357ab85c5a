"""The signer against QingCloud's documented example (docs.qingcloud.com, API signature page)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote_plus

from pitrix.providers.qingcloud.signer import (
    canonical_query,
    format_time_stamp,
    parse_time_stamp,
    sign,
    signed_params,
    string_to_sign,
    verify,
)

# The request of QingCloud's signature documentation, with its secret key.
DOC_PARAMS: dict[str, object] = {
    "count": 1,
    "vxnets.1": "vxnet-0",
    "zone": "pek1",
    "instance_type": "small_b",
    "signature_version": 1,
    "signature_method": "HmacSHA256",
    "instance_name": "demo",
    "image_id": "centos64x86a",
    "login_mode": "passwd",
    "login_passwd": "QingCloud20130712",
    "version": 1,
    "access_key_id": "QYACCESSKEYIDEXAMPLE",
    "action": "RunInstances",
    "time_stamp": "2013-08-27T14:30:10Z",
}
DOC_SECRET = "SECRETACCESSKEY"
DOC_STRING_TO_SIGN = (
    "GET\n/iaas/\n"
    "access_key_id=QYACCESSKEYIDEXAMPLE&action=RunInstances&count=1&image_id=centos64x86a"
    "&instance_name=demo&instance_type=small_b&login_mode=passwd&login_passwd=QingCloud20130712"
    "&signature_method=HmacSHA256&signature_version=1&time_stamp=2013-08-27T14%3A30%3A10Z"
    "&version=1&vxnets.1=vxnet-0&zone=pek1"
)
DOC_SIGNATURE = "32bseYy39DOlatuewpeuW5vpmW51sD1A/JdGynqSpP8="
DOC_SIGNATURE_QUOTED = "32bseYy39DOlatuewpeuW5vpmW51sD1A%2FJdGynqSpP8%3D"


def test_string_to_sign_matches_documentation() -> None:
    assert string_to_sign("GET", "/iaas/", DOC_PARAMS) == DOC_STRING_TO_SIGN


def test_signature_matches_documentation() -> None:
    signature = sign(DOC_SECRET, "GET", "/iaas/", DOC_PARAMS)
    assert signature == DOC_SIGNATURE
    assert quote_plus(signature) == DOC_SIGNATURE_QUOTED


def test_signature_parameter_itself_is_not_signed() -> None:
    with_signature = {**DOC_PARAMS, "signature": DOC_SIGNATURE}
    assert canonical_query(with_signature) == canonical_query(DOC_PARAMS)
    assert verify(DOC_SECRET, "GET", "/iaas/", with_signature, DOC_SIGNATURE)


def test_any_change_breaks_the_signature() -> None:
    assert not verify(DOC_SECRET, "POST", "/iaas/", DOC_PARAMS, DOC_SIGNATURE)
    assert not verify(DOC_SECRET, "GET", "/iaas/", {**DOC_PARAMS, "count": 2}, DOC_SIGNATURE)
    assert not verify("OTHERSECRET", "GET", "/iaas/", DOC_PARAMS, DOC_SIGNATURE)


def test_values_are_quoted_like_qingcloud_sdk() -> None:
    # Space as %20 (not +), '/' and '~' as QingCloud's SDK does, unicode as UTF-8.
    query = canonical_query({"search_word": "a b/c~d", "instance_name": "节点"})
    assert query == "instance_name=%E8%8A%82%E7%82%B9&search_word=a%20b%2Fc~d"


def test_signed_params_adds_common_parameters() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = signed_params(
        {"action": "DescribeInstances", "zone": "sim1", "limit": 10},
        access_key_id="AK",
        secret_access_key="SK",
        method="POST",
        now=moment,
    )
    assert out["time_stamp"] == "2026-01-02T03:04:05Z"
    assert out["limit"] == "10"
    assert {out["signature_method"], out["signature_version"], out["version"]} == {"HmacSHA256", "1"}
    assert verify("SK", "POST", "/iaas/", out, out["signature"])


def test_time_stamp_round_trip() -> None:
    moment = datetime(2013, 8, 27, 14, 30, 10, tzinfo=UTC)
    assert format_time_stamp(moment) == "2013-08-27T14:30:10Z"
    assert parse_time_stamp("2013-08-27T14:30:10Z") == moment
