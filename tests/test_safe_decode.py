"""The restricted joblib decoder: real ``joblib.dump`` files decode to the same values;
pickles that would run code are refused without running it."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import subprocess
import zlib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.security.safe_decode import (
    BudgetExceededError,
    CorruptPayloadError,
    DecodeLimits,
    SafeDecodeError,
    UnsafePickleError,
    joblib_to_json,
    load_joblib_safely,
)
from tests.support.fuzz import FUZZ_EXAMPLES
from tests.support.hostile import (
    HOSTILE_JOBLIB,
    big_integer,
    memo_bomb,
    object_dtype_frombuffer,
    run_in_child,
    void_dtype_setstate,
)


def dumped(value: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(value, buffer, **kwargs)
    return buffer.getvalue()


def sample_value() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "floats": rng.normal(size=(50, 3)),
        "ints": np.arange(12, dtype=np.int32).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "bools": np.array([True, False]),
        "empty": np.array([], dtype=float),
        "strings": np.array(["g", "r"]),
        "scalar_f": np.float32(1.5),
        "scalar_i": np.int64(-7),
        "scalar_b": np.bool_(True),
        "nested": [1, [2.5, ("three", None)], {"deep": {"deeper": [np.float64(4.0)]}}],
        "ordered": collections.OrderedDict([("b", 2), ("a", 1)]),
        "a_set": {3, 1, 2},
        "text": "hello",
        "flag": False,
    }


COMPRESSIONS: list[dict[str, Any]] = [
    {},
    {"compress": 3},
    {"compress": ("zlib", 9)},
    {"compress": ("gzip", 3)},
    {"compress": ("bz2", 1)},
    {"compress": ("xz", 1)},
    {"compress": ("lzma", 1)},
    {"protocol": 0},
    {"protocol": 2, "compress": 3},
    {"protocol": 5},
]


@pytest.mark.parametrize("kwargs", COMPRESSIONS, ids=str)
def test_real_joblib_files_decode_to_the_same_values(kwargs: dict[str, Any]) -> None:
    original = sample_value()
    decoded = load_joblib_safely(dumped(original, **kwargs))
    for key in ("floats", "ints", "fortran", "bools", "empty", "strings"):
        assert isinstance(decoded[key], np.ndarray)
        assert decoded[key].dtype == original[key].dtype
        np.testing.assert_array_equal(decoded[key], original[key])
    assert decoded["scalar_f"] == np.float32(1.5) and decoded["scalar_f"].dtype == np.float32
    assert decoded["scalar_i"] == -7 and decoded["scalar_b"]
    assert decoded["nested"] == original["nested"]
    assert decoded["ordered"] == {"b": 2, "a": 1} and list(decoded["ordered"]) == ["b", "a"]
    assert decoded["a_set"] == {1, 2, 3}
    assert (decoded["text"], decoded["flag"]) == ("hello", False)


def test_results_become_plain_json() -> None:
    value = {
        "covariance": np.eye(2),
        "nan": float("nan"),
        "inf_array": np.array([1.0, np.inf]),
        "tuple": (1, 2),
        "int_key": {1: "one"},
        "scalar": np.float64(2.5),
        "dates": np.array(["2024-01-02T03:04"], dtype="datetime64[m]"),
        "complex": np.array([1 + 2j]),
    }
    assert joblib_to_json(dumped(value, compress=3)) == {
        "covariance": [[1.0, 0.0], [0.0, 1.0]],
        "nan": None,
        "inf_array": [1.0, None],
        "tuple": [1, 2],
        "int_key": {"1": "one"},
        "scalar": 2.5,
        "dates": ["2024-01-02T03:04"],
        "complex": [{"real": 1.0, "imag": 2.0}],
    }


def test_a_dict_subclass_such_as_an_sncosmo_result_is_read_as_a_dict() -> None:
    sncosmo_utils = pytest.importorskip("sncosmo.utils")
    result = sncosmo_utils.Result(success=True, parameters=np.array([0.1, 2.0]))
    result["errors"] = collections.OrderedDict(z=0.01)
    decoded = joblib_to_json(dumped(result, compress=3))
    assert decoded == {"success": True, "parameters": [0.1, 2.0], "errors": {"z": 0.01}}


class RunsCode:
    def __init__(self, target: Any, *args: Any) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.target, self.args)


def attacks(marker: Path) -> dict[str, bytes]:
    command = f"touch {marker}"
    return {
        "os.system": pickle.dumps(RunsCode(os.system, command)),
        "os.system in a compressed joblib file": dumped(
            {"ok": np.arange(3), "evil": RunsCode(os.system, command)}, compress=3
        ),
        "os.system at protocol 0": pickle.dumps(RunsCode(os.system, command), protocol=0),
        "hand-written GLOBAL/REDUCE": f"cos\nsystem\n(S'{command}'\ntR.".encode(),
        "builtins.eval": pickle.dumps(RunsCode(eval, f"open('{marker}', 'w')")),
        "builtins.exec": pickle.dumps(RunsCode(exec, f"open('{marker}', 'w')")),
        "subprocess.Popen": pickle.dumps(RunsCode(subprocess.Popen, ["touch", str(marker)])),
        "builtins.getattr": pickle.dumps(RunsCode(getattr, "text", "upper")),
        "numpy.load": pickle.dumps(RunsCode(np.load, str(marker))),
        "builtins.open": pickle.dumps(RunsCode(open, str(marker), "w")),
    }


def test_pickles_that_would_run_code_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name, payload in attacks(marker).items():
        with pytest.raises(UnsafePickleError, match="which is not allowed") as refused:
            load_joblib_safely(payload)
        assert "the pickle references" in str(refused.value), name
        assert not marker.exists(), name


def test_allowed_callables_check_their_arguments() -> None:
    # _codecs.encode is allowed for protocol-2 bytes, but only as latin1 text → bytes.
    rot13 = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(UnsafePickleError, match="latin1"):
        load_joblib_safely(rot13)
    # numpy._reconstruct only rebuilds plain arrays.
    subclass = pickle.dumps(np.ma.masked_array([1.0, 2.0]))
    with pytest.raises(UnsafePickleError, match="not allowed"):
        load_joblib_safely(subclass)


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = dumped({"objects": np.array([1, RunsCode(os.system, f"touch {marker}")])})
    with pytest.raises(UnsafePickleError, match="arrays of Python objects"):
        load_joblib_safely(payload)
    with pytest.raises(UnsafePickleError):
        load_joblib_safely(pickle.dumps(np.array(["a", 1], dtype=object)))
    assert not marker.exists()


def test_corrupt_and_oversized_files_are_refused_with_a_reason() -> None:
    payload = dumped({"floats": np.arange(1000.0)})
    with pytest.raises(CorruptPayloadError, match=r"truncated|could not be decoded"):
        load_joblib_safely(payload[: len(payload) // 2])
    with pytest.raises(CorruptPayloadError, match="corrupt"):
        load_joblib_safely(b"\x78\x9c" + b"\x00garbage")
    bomb = zlib.compress(b"\0" * (4 * 1024 * 1024))
    with pytest.raises(SafeDecodeError, match="exceed 1048576 bytes"):
        load_joblib_safely(bomb, max_bytes=1024 * 1024)
    # A few hundred bytes of pickle that reference one list over and over.
    shared: list[Any] = list(range(10))
    for _ in range(8):
        shared = [shared] * 10
    tiny = pickle.dumps(shared)
    assert len(tiny) < 1000
    with pytest.raises(SafeDecodeError, match="too many values"):
        joblib_to_json(tiny, max_values=100_000)
    with pytest.raises(SafeDecodeError, match="lz4"):
        load_joblib_safely(b"\x04\x22\x4d\x18rest")


# ---------------------------------------------------------------- hostile pickles (issue 9)


# Refused on main too (after numpy applied the state, or after hashing): fuzz seeds only.
REFUSED_ON_MAIN = ("structured dtype with bad fields", "hash bomb")


@pytest.mark.parametrize(
    "name",
    [n for n in HOSTILE_JOBLIB if n not in REFUSED_ON_MAIN],
    ids=lambda n: n.replace(" ", "-"),
)
def test_hostile_pickles_are_refused_in_a_forked_child(name: str) -> None:
    """Fails on main: the two dtype crashers kill the child with SIGSEGV, the 3000-digit
    integer and the 2.5-million-value memo bomb decode."""
    outcome = run_in_child(joblib_to_json, HOSTILE_JOBLIB[name]())
    assert outcome.raised in REFUSALS, outcome.describe()
    assert outcome.message


REFUSALS = {"SafeDecodeError", "UnsafePickleError", "CorruptPayloadError", "BudgetExceededError"}


def test_crafted_dtype_states_are_refused_with_a_message() -> None:
    """Fails on main: both children die of SIGSEGV."""
    objects = run_in_child(joblib_to_json, object_dtype_frombuffer())
    assert (objects.raised, objects.message) == (
        "UnsafePickleError",
        "numpy arrays of Python objects are not allowed",
    ), objects.describe()
    void = run_in_child(joblib_to_json, void_dtype_setstate())
    assert (void.raised, void.message) == (
        "UnsafePickleError",
        "a numpy dtype has a malformed state",
    ), void.describe()


def test_plain_dtypes_in_either_byte_order_still_decode() -> None:
    value = {
        "when": np.array(["2024-01-02"], dtype="datetime64[D]"),
        "big_endian": np.arange(3, dtype=">i4"),
        "bytes": np.array([b"ab"], dtype="S2"),
    }
    for protocol in (0, 2, 5):
        assert joblib_to_json(pickle.dumps(value, protocol=protocol)) == {
            "when": ["2024-01-02"],
            "big_endian": [0, 1, 2],
            "bytes": ["YWI="],
        }


def test_budgets_are_stated_in_the_refusal() -> None:
    """Fails on main: the integer and the 2.5-million-value memo bomb are decoded."""
    with pytest.raises(BudgetExceededError, match="integer that is too large"):
        joblib_to_json(big_integer())
    with pytest.raises(BudgetExceededError, match="too many values"):
        joblib_to_json(memo_bomb())
    with pytest.raises(BudgetExceededError, match="operations"):
        joblib_to_json(pickle.dumps(list(range(5000))), limits=DecodeLimits(max_operations=1000))
    with pytest.raises(BudgetExceededError, match="more than 1000 elements"):
        joblib_to_json(dumped(np.zeros(2000)), limits=DecodeLimits(max_array_elements=1000))
    assert joblib_to_json(pickle.dumps({"n": 2**63})) == {"n": 2**63}


# ---------------------------------------------------------------- fuzzing

SEEDS = [
    dumped(sample_value(), **kwargs)
    for kwargs in ({}, {"protocol": 0}, {"protocol": 2}, {"protocol": 5})
] + [pickle.dumps(np.arange(6.0).reshape(2, 3), protocol=p) for p in (2, 5)]
HOSTILE_SEEDS = [make() for make in HOSTILE_JOBLIB.values()]

_ALLOWED = [
    b"cnumpy\ndtype\n",
    b"cnumpy.core.multiarray\n_reconstruct\n",
    b"cnumpy.core.multiarray\nscalar\n",
    b"cnumpy.core.numeric\n_frombuffer\n",
    b"cnumpy\nndarray\n",
    b"cjoblib.numpy_pickle\nNumpyArrayWrapper\n",
    b"ccollections\nOrderedDict\n",
    b"cbuiltins\nset\n",
    b"cbuiltins\nbytearray\n",
    b"c_codecs\nencode\n",
    b"ccopyreg\n_reconstructor\n",
]
_PLAIN_OPCODES = list(b"](}Nt\x85\x86\x87RbeusalpK\x81\x94\x88\x89.2012")
opcode_streams = st.lists(
    st.one_of(
        st.sampled_from(_ALLOWED),
        st.sampled_from([bytes([o]) for o in _PLAIN_OPCODES]),
        st.integers(0, 255).map(lambda n: b"K" + bytes([n])),
        st.integers(0, 40).map(lambda n: b"h" + bytes([n])),
        st.sampled_from(["f8", "V8", "O8", "U3", "M8", "|", "<", "C", "F"]).map(
            lambda s: b"X" + len(s).to_bytes(4, "little") + s.encode()
        ),
        st.binary(max_size=24).map(lambda b: b"C" + bytes([len(b)]) + b),
    ),
    max_size=60,
).map(lambda ops: b"\x80\x02" + b"".join(ops) + b".")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS + HOSTILE_SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and data:
            data[where] = draw(st.integers(0, 255))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 8))]
        else:
            del data[where + 1 :]
    return bytes(data)


def decode_anything(data: bytes) -> None:
    """What the webhook does with results: decode, then encode as JSON."""
    json.dumps(joblib_to_json(data), allow_nan=False)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True)
@given(st.one_of(mutated(), opcode_streams, st.sampled_from(HOSTILE_SEEDS)))
def test_fuzzed_pickles_are_decoded_or_refused_never_crash(data: bytes) -> None:
    """Each decode runs in a forked child: a segfault is reported, not fatal to the run."""
    outcome = run_in_child(decode_anything, data)
    assert outcome.returned or outcome.raised in REFUSALS, outcome.describe()


def test_a_refusal_never_prints_the_crafted_structure() -> None:
    """Fails on main: the refusal message is the repr of 4 million nested lists."""
    item: Any = [1]
    for _ in range(22):
        item = [item, item]
    data = b"\x80\x02" + pickle.dumps(item, protocol=2)[2:-1] + b")\x81."  # NEWOBJ on a list
    with pytest.raises(UnsafePickleError) as refused:
        joblib_to_json(data)
    assert str(refused.value) == "creating a list is not allowed"
