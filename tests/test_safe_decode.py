"""The restricted joblib decoder: real ``joblib.dump`` files decode to the same values;
pickles that would run code are refused without running it."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import zlib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from shared.safe_decode import (
    CorruptPayloadError,
    SafeDecodeError,
    UnsafePickleError,
    joblib_to_json,
    load_joblib_safely,
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
