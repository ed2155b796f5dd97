"""Standard Webhooks signatures: the published test vector, and what verify() refuses."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from shared.security.signing import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    secret_key,
    sign,
    signature_headers,
    verify,
)

# The example of the Standard Webhooks specification and its reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_reproduces_the_published_test_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_verify_accepts_the_published_vector_at_its_time() -> None:
    headers = {
        ID_HEADER: SPEC_ID,
        TIMESTAMP_HEADER: str(SPEC_TIMESTAMP),
        SIGNATURE_HEADER: SPEC_SIGNATURE,
    }
    assert verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10) == SPEC_ID


def test_whsec_secret_uses_the_decoded_key_and_raw_secret_its_bytes() -> None:
    assert secret_key(SPEC_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert secret_key("a plain secret of enough length") == b"a plain secret of enough length"
    with pytest.raises(ValueError, match="base64"):
        secret_key("whsec_not base64!")


def test_round_trip_with_raw_secret_and_case_insensitive_headers() -> None:
    secret = "raw-secret-without-any-prefix-123"
    headers = signature_headers(secret, "analysis-1", b'{"a": 1}')
    shouted = {name.upper(): value for name, value in headers.items()}
    assert verify(secret, shouted, b'{"a": 1}') == "analysis-1"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b'{"a": 2}'}, "no matching signature"),
        ({"secret": "another-secret-of-enough-length!!"}, "no matching signature"),
        ({"id": "analysis-2"}, "no matching signature"),
        ({"timestamp_shift": -301}, "tolerance"),
        ({"timestamp_shift": 301}, "tolerance"),
    ],
)
def test_verify_refuses_tampering_wrong_secret_and_stale_timestamps(
    change: dict[str, Any], reason: str
) -> None:
    secret = "raw-secret-without-any-prefix-123"
    now = int(time.time())
    stamp = now + int(change.get("timestamp_shift", 0))
    headers = signature_headers(secret, "analysis-1", b'{"a": 1}', timestamp=stamp)
    if "id" in change:
        headers[ID_HEADER] = str(change["id"])
    body = change.get("body", b'{"a": 1}')
    with pytest.raises(SignatureError, match=reason):
        verify(str(change.get("secret", secret)), headers, body, now=now)


def test_verify_needs_all_three_headers_and_an_integer_timestamp() -> None:
    headers = signature_headers(SPEC_SECRET, SPEC_ID, SPEC_BODY)
    for missing in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        partial = {k: v for k, v in headers.items() if k != missing}
        with pytest.raises(SignatureError, match="missing"):
            verify(SPEC_SECRET, partial, SPEC_BODY)
    with pytest.raises(SignatureError, match="not an integer"):
        verify(SPEC_SECRET, {**headers, TIMESTAMP_HEADER: "soon"}, SPEC_BODY)


def test_any_one_of_several_signatures_may_match() -> None:
    headers = signature_headers(SPEC_SECRET, SPEC_ID, SPEC_BODY)
    rotated = f"v1,{base64.b64encode(b'x' * 32).decode()} {headers[SIGNATURE_HEADER]}"
    assert verify(SPEC_SECRET, {**headers, SIGNATURE_HEADER: rotated}, SPEC_BODY) == SPEC_ID
    only_other_versions = headers[SIGNATURE_HEADER].replace("v1,", "v2,")
    with pytest.raises(SignatureError):
        verify(SPEC_SECRET, {**headers, SIGNATURE_HEADER: only_other_versions}, SPEC_BODY)
