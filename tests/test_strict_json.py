"""shared.security.strict_json: a body is refused exactly when its value holds something the
databases cannot store (NUL, a lone surrogate) or nests too deep, however it is written."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.security.strict_json import MAX_JSON_DEPTH, parse_json_text
from tests.support.fuzz import FUZZ_EXAMPLES


def storable(value: Any, depth: int = 0) -> bool:
    """The rule, written out plainly: what the parser must accept."""
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return depth < MAX_JSON_DEPTH and all(storable(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return depth < MAX_JSON_DEPTH and all(
            storable(key) and storable(item, depth + 1) for key, item in value.items()
        )
    return True


# Text that is often plain and sometimes holds NUL, a lone surrogate or a backslash.
texts = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x00", "\ud800", "\udfff", "\\", "u", "[", "{"]),
    ),
    max_size=8,
)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def outcome(raw: bytes | str) -> bool:
    try:
        parse_json_text(raw)
    except ValueError:
        return False
    return True


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True)
@given(value=values, ascii_only=st.booleans(), as_text=st.booleans())
def test_a_body_is_accepted_exactly_when_its_value_is_storable(
    value: Any, ascii_only: bool, as_text: bool
) -> None:
    written = json.dumps(value, ensure_ascii=ascii_only)
    raw: bytes | str = written if as_text else written.encode("utf-8", "surrogatepass")
    assert outcome(raw) == storable(value)


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        # A surrogate written as UTF-8 bytes rather than escaped: the parser lets it through.
        (b'{"a": "\xed\xa0\x80"}', False),
        # Text already decoded can hold a lone surrogate without any escape.
        ('{"a": "x\ud800"}', False),
        # UTF-16, which the parser also reads: every other byte is NUL.
        ('{"a": "x"}'.encode("utf-16"), True),
        ('{"a": "x\\u0000"}'.encode("utf-16"), False),
        # Brackets in strings are only text, however many.
        (json.dumps({"a": "[" * 200}).encode(), True),
        (json.dumps(nested(MAX_JSON_DEPTH)).encode(), True),
        (json.dumps(nested(MAX_JSON_DEPTH + 1)).encode(), False),
        (json.dumps(nested(MAX_JSON_DEPTH + 1, "[")).encode(), False),
        # A BOM before UTF-8 text is read past.
        (b'\xef\xbb\xbf{"a": 1}', True),
    ],
)
def test_the_ways_a_problem_can_hide_in_the_text(raw: bytes | str, accepted: bool) -> None:
    assert outcome(raw) == accepted
