"""Decoding third-party joblib files without executing them.

``joblib.load`` is ``pickle.load``: whoever wrote the bytes chooses which functions run while
they are read (SkyPortal weakness S1). This module reads the same files with a restricted
unpickler: a pickle may only name an allow-list of globals (numpy arrays, scalars and dtypes,
builtin containers, and a few dict subclasses that are rebuilt as plain dicts), and every
callable it may reach checks its arguments. Anything else is refused with
:class:`UnsafePickleError` before it is called.

joblib's own format is mirrored: ``joblib.dump`` replaces each numpy array by a
``NumpyArrayWrapper`` object (shape, order, dtype) and writes the raw array bytes right after
it, inside the pickle stream; the wrapper is swapped for the array when its BUILD opcode is
read, as joblib's ``NumpyUnpickler`` does. zlib, gzip, bz2, xz and lzma compressed files and
uncompressed ones are supported; decompression is bounded.
"""

from __future__ import annotations

import base64
import bz2
import codecs
import io
import lzma
import math
import pickle
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class SafeDecodeError(ValueError):
    """The bytes cannot be decoded safely; the message says why."""


class UnsafePickleError(SafeDecodeError):
    """The pickle names something outside the allow-list (nothing was executed)."""


class CorruptPayloadError(SafeDecodeError):
    """The bytes are not a readable joblib/pickle file."""


class PlainDict(dict[Any, Any]):
    """Stand-in for dict subclasses such as ``collections.OrderedDict`` and sncosmo's Result."""


class _Marker:
    """Stand-in for a class that may be named but never called (e.g. ``numpy.ndarray``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


NDARRAY = _Marker("numpy.ndarray")
OBJECT = _Marker("builtins.object")


class _ArrayWrapperState:
    """Stand-in for ``joblib.numpy_pickle.NumpyArrayWrapper``: holds its state, nothing else."""

    state: dict[str, Any]


def _plain_dict(*args: Any) -> PlainDict:
    if len(args) > 1 or (args and not isinstance(args[0], list | tuple | dict)):
        raise UnsafePickleError("a dict was rebuilt with unexpected arguments")
    return PlainDict(*args)


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in {"latin1", "latin-1"}:
        raise UnsafePickleError("_codecs.encode is only allowed for latin1 text")
    return codecs.encode(text, "latin1")


def _checked_dtype(dtype: Any) -> np.dtype[Any]:
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError("expected a numpy dtype")
    if dtype.hasobject:
        raise UnsafePickleError("numpy arrays of Python objects are not allowed")
    return dtype


def _scalar(dtype: Any, data: Any = None) -> Any:
    checked = _checked_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != checked.itemsize:
        raise CorruptPayloadError("a numpy scalar has the wrong number of bytes")
    return np.frombuffer(data, dtype=checked, count=1)[0]


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray[Any, Any]:
    if subtype is not NDARRAY:
        raise UnsafePickleError(f"numpy array subclass {subtype!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray[Any, Any]:
    checked = _checked_dtype(dtype)
    if not isinstance(buffer, bytes | bytearray) or not isinstance(shape, tuple):
        raise CorruptPayloadError("a numpy array buffer is malformed")
    array = np.frombuffer(bytes(buffer), dtype=checked)
    return array.reshape(shape, order="F" if order == "F" else "C")


def _set(items: Any = ()) -> set[Any]:
    if not isinstance(items, list | tuple):
        raise UnsafePickleError("a set was rebuilt with unexpected arguments")
    return set(items)


def _frozenset(items: Any = ()) -> frozenset[Any]:
    return frozenset(_set(items))


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(isinstance(v, int | float) for v in (real, imag)):
        raise UnsafePickleError("complex() was called with non-numbers")
    return complex(real, imag)


def _bytearray(data: Any = b"") -> bytearray:
    if not isinstance(data, bytes | bytearray):
        raise UnsafePickleError("bytearray() was called with a non-bytes argument")
    return bytearray(data)


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Protocols 0 and 1 rebuild objects this way; the base class given is ignored."""
    if cls is _ArrayWrapperState:
        return _ArrayWrapperState()
    if cls is not PlainDict:
        raise UnsafePickleError(f"copyreg._reconstructor for {cls!r} is not allowed")
    return PlainDict(state) if isinstance(state, dict) else PlainDict()


_NUMPY_MODULES = (
    "numpy",
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core.numeric",
    "numpy._core.numeric",
)
_NUMPY_NAMES: dict[str, Any] = {
    "ndarray": NDARRAY,
    "matrix": NDARRAY,
    "memmap": NDARRAY,
    "dtype": np.dtype,
    "scalar": _scalar,
    "_reconstruct": _reconstruct,
    "_frombuffer": _frombuffer,
}
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(m, n): v for m in _NUMPY_MODULES for n, v in _NUMPY_NAMES.items()},
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _ArrayWrapperState,
    ("collections", "OrderedDict"): _plain_dict,
    ("sncosmo.utils", "Result"): PlainDict,
    ("_codecs", "encode"): _latin1_encode,
    # Python 3 writes Python 2 module names (__builtin__, copy_reg) for protocols < 3.
    **{(m, "_reconstructor"): _copyreg_reconstructor for m in ("copyreg", "copy_reg")},
    **{
        (m, n): v
        for m in ("builtins", "__builtin__")
        for n, v in {
            "object": OBJECT,
            "dict": _plain_dict,
            "set": _set,
            "frozenset": _frozenset,
            "complex": _complex,
            "bytearray": _bytearray,
        }.items()
    },
}
# NEWOBJ calls cls.__new__(cls, *args): only these classes may be created that way.
_NEWOBJ_CLASSES = (PlainDict, _ArrayWrapperState)


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """joblib-aware unpickler that resolves only allow-listed globals.

    Built on the pure-Python unpickler (as joblib's NumpyUnpickler is) so that BUILD can be
    intercepted and array bytes read from the stream right after a wrapper.
    """

    dispatch = pickle._Unpickler.dispatch.copy()  # type: ignore[attr-defined]

    def __init__(self, stream: io.BytesIO) -> None:
        super().__init__(stream)
        self._stream = stream

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the pickle references {module}.{name}, which is not allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent references are not allowed")

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.stack.append(_new_object(cls, args))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if kwargs:
            raise UnsafePickleError("keyword arguments to __new__ are not allowed")
        self.stack.append(_new_object(cls, args))

    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, _ArrayWrapperState):
            self.stack[-1] = self._read_wrapped_array(state)
        elif isinstance(target, np.ndarray):
            _set_array_state(target, state)
        elif isinstance(target, np.dtype):
            target.__setstate__(state)
        elif isinstance(target, PlainDict):
            pass  # instance attributes of a dict subclass (e.g. deprecation notes): dropped
        else:
            raise UnsafePickleError(f"setting the state of {type(target).__name__} is not allowed")

    def _read_wrapped_array(self, state: Any) -> np.ndarray[Any, Any]:
        if not isinstance(state, dict):
            raise CorruptPayloadError("a joblib array wrapper has no state")
        dtype = _checked_dtype(state.get("dtype"))
        shape = state.get("shape")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise CorruptPayloadError("a joblib array has an invalid shape")
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self._stream.read(1)
            self._stream.read(int.from_bytes(padding or b"\0", "little"))
        count = math.prod(shape)
        size = count * dtype.itemsize
        data = self._stream.read(size)
        if len(data) != size:
            raise CorruptPayloadError("a joblib array is truncated")
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        if state.get("order") == "F":
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)

    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def _new_object(cls: Any, args: Any) -> Any:
    if cls is np.dtype:
        return np.dtype(*args)
    if cls not in _NEWOBJ_CLASSES:
        raise UnsafePickleError(f"creating {cls!r} is not allowed")
    if cls is _ArrayWrapperState:
        return _ArrayWrapperState()
    return PlainDict()


def _set_array_state(array: np.ndarray[Any, Any], state: Any) -> None:
    if not isinstance(state, tuple) or len(state) != 5:
        raise CorruptPayloadError("a numpy array has a malformed state")
    _checked_dtype(state[2])
    if not isinstance(state[4], bytes | bytearray):
        raise UnsafePickleError("numpy arrays of Python objects are not allowed")
    array.__setstate__(state)


def _bounded(decompressor: Any, data: bytes, limit: int) -> bytes:
    out = bytearray()
    pending = data
    while True:
        chunk = decompressor.decompress(pending, limit + 1 - len(out))
        out += chunk
        if len(out) > limit:
            raise SafeDecodeError(f"the decompressed results exceed {limit} bytes")
        pending = getattr(decompressor, "unconsumed_tail", b"")
        if decompressor.eof or (not chunk and not pending and _needs_input(decompressor)):
            return bytes(out)


def _needs_input(decompressor: Any) -> bool:
    return bool(getattr(decompressor, "needs_input", True))


def decompress_joblib(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The pickle stream inside a joblib file (decompressed if needed, at most max_bytes)."""
    decompressors: list[tuple[bytes, Callable[[], Any]]] = [
        (b"\x78", zlib.decompressobj),
        (b"\x1f\x8b", lambda: zlib.decompressobj(wbits=31)),
        (b"BZ", bz2.BZ2Decompressor),
        (b"\xfd7zXZ", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
        (b"\x5d\x00", lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE)),
    ]
    if data.startswith(b"\x04\x22\x4d\x18"):
        raise SafeDecodeError("lz4-compressed joblib files are not supported; use zlib or gzip")
    if data.startswith(b"ZF"):
        raise SafeDecodeError("joblib files older than joblib 0.10 are not supported")
    for prefix, factory in decompressors:
        if data.startswith(prefix):
            try:
                return _bounded(factory(), data, max_bytes)
            except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
                raise CorruptPayloadError(f"the compressed results are corrupt: {exc}") from None
    # No compressor magic: an uncompressed pickle of protocol 0 or 1 (or garbage, which the
    # unpickler rejects).
    if len(data) > max_bytes:
        raise SafeDecodeError(f"the results exceed {max_bytes} bytes")
    return data


def load_joblib_safely(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """The object in a joblib file, built only from allow-listed types; never executes code."""
    stream = io.BytesIO(decompress_joblib(data, max_bytes))
    try:
        return RestrictedUnpickler(stream).load()
    except SafeDecodeError:
        raise
    except RecursionError:
        raise CorruptPayloadError("the results are nested too deeply") from None
    except Exception as exc:
        raise CorruptPayloadError(f"the results could not be decoded: {exc}") from None


MAX_JSON_VALUES = 5_000_000


class _Budget:
    """Counts values produced: a small pickle can reference one big list many times."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise SafeDecodeError("the results expand to too many values")


def to_jsonable(value: Any, max_values: int = MAX_JSON_VALUES) -> Any:
    """Plain JSON values: arrays become lists, NaN and infinities become null."""
    return _jsonable(value, _Budget(max_values))


def _jsonable(value: Any, budget: _Budget) -> Any:
    budget.spend(1)
    if isinstance(value, dict):
        return {_json_key(k): _jsonable(v, budget) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_jsonable(v, budget) for v in items]
    if isinstance(value, np.ndarray):
        budget.spend(value.size)
        return _array_list(value, budget)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), budget)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, complex):
        return {"real": _jsonable(value.real, budget), "imag": _jsonable(value.imag, budget)}
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if value is None or isinstance(value, bool | int | str):
        return value
    raise UnsafePickleError(f"values of type {type(value).__name__} cannot be returned")


def _array_list(array: np.ndarray[Any, Any], budget: _Budget) -> Any:
    """Without visiting each element in Python where numpy can do the work."""
    if array.dtype.kind in "biuU":
        return array.tolist()
    if array.dtype.kind == "M":
        return np.datetime_as_string(array).tolist()
    if array.dtype.kind == "m":
        return array.astype(str).tolist()
    if array.dtype.kind == "f":
        cells = array.astype(object)
        cells[~np.isfinite(array)] = None
        return cells.tolist()
    budget.left += array.size  # visited one by one below, and counted there
    return _jsonable(array.tolist(), budget)


def _json_key(key: Any) -> str:
    if isinstance(key, np.generic):
        key = key.item()
    return key if isinstance(key, str) else str(key)


def joblib_to_json(
    data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_values: int = MAX_JSON_VALUES
) -> Any:
    """Decode a joblib file safely into plain JSON values (CPU-bound: call it in a thread)."""
    value = load_joblib_safely(data, max_bytes)
    try:
        return to_jsonable(value, max_values)
    except RecursionError:
        raise CorruptPayloadError("the results are nested too deeply") from None
