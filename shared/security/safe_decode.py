"""Decoding third-party joblib and netCDF files without executing them or exhausting the server.

``joblib.load`` is ``pickle.load``: whoever wrote the bytes chooses which functions run while
they are read (SkyPortal weakness S1). This module reads the same files with a restricted
unpickler: a pickle may only name an allow-list of globals (numpy arrays, scalars and dtypes,
builtin containers, and a few dict subclasses that are rebuilt as plain dicts), and every
callable it may reach checks its arguments. Anything else is refused with
:class:`UnsafePickleError` before it is called.

No state from the file ever reaches numpy's C-level ``__setstate__``, ``_reconstruct`` or
``_frombuffer``: a pickled dtype is only recorded (its name and byte order), checked against
an allow-list of plain kinds (bool, integers, floats, complex, fixed-size bytes and text,
datetimes) and rebuilt from a dtype string; an array is built with ``np.frombuffer`` over a
copy of bytes whose count must equal shape x item size exactly. Object, void and structured
dtypes are refused.

Every decode runs under :class:`DecodeLimits`: decompressed bytes, pickle opcodes (and the
work of the allowed callables), values in the result (a shared reference counts every time it
is reached), array elements, nesting depth and integer size. Exceeding one is a
:class:`SafeDecodeError`, as is any other failure.

joblib's own format is mirrored: ``joblib.dump`` replaces each numpy array by a
``NumpyArrayWrapper`` object (shape, order, dtype) and writes the raw array bytes right after
it, inside the pickle stream; the wrapper is swapped for the array when its BUILD opcode is
read, as joblib's ``NumpyUnpickler`` does. zlib, gzip, bz2, xz and lzma compressed files and
uncompressed ones are supported; decompression is bounded.

netCDF/HDF5 files (ArviZ inference data) are read by :func:`read_netcdf_variables`, which
checks every variable's declared shape and item size against :class:`NetcdfLimits` from the
file's metadata before any data is read.
"""

from __future__ import annotations

import base64
import bz2
import codecs
import io
import lzma
import math
import pickle
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_JSON_VALUES = 200_000


@dataclass(frozen=True)
class DecodeLimits:
    """The CPU and memory budget of one joblib decode."""

    max_bytes: int = DEFAULT_MAX_BYTES  # decompressed pickle stream
    max_operations: int = 1_000_000  # opcodes, plus items handled by allowed callables
    max_values: int = MAX_JSON_VALUES  # Python values in the result, counted each time reached
    max_array_elements: int = 4_000_000  # summed over every array and every reference to it
    max_depth: int = 100  # nesting of containers in the result
    max_int_bits: int = 64  # integers must fit in [-2**63, 2**64)
    max_dimensions: int = 32


class SafeDecodeError(ValueError):
    """The bytes cannot be decoded safely; the message says why."""


class UnsafePickleError(SafeDecodeError):
    """The pickle names something outside the allow-list (nothing was executed)."""


class CorruptPayloadError(SafeDecodeError):
    """The bytes are not a readable joblib/pickle file."""


class BudgetExceededError(SafeDecodeError):
    """Decoding would cost more CPU or memory than allowed."""


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


def _describe(value: Any) -> str:
    """Names what a pickle pointed at without repr(): a crafted structure's repr is huge."""
    if isinstance(value, _Marker):
        return value.name
    if isinstance(value, type):
        return value.__name__
    return f"a {type(value).__name__}"


class _Placeholder:
    """Something that becomes a numpy array when its BUILD opcode is read."""

    array: np.ndarray[Any, Any] | None = None


class _ArrayWrapperState(_Placeholder):
    """Stand-in for ``joblib.numpy_pickle.NumpyArrayWrapper``."""


class _PendingArray(_Placeholder):
    """What ``numpy._reconstruct`` returns here: an array still waiting for its state."""


class _Budget:
    """Counts the work done and the values produced by one decode."""

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.operations = limits.max_operations
        self.left = limits.max_values
        self.elements = limits.max_array_elements

    def work(self, count: int) -> None:
        self.operations -= count
        if self.operations < 0:
            raise BudgetExceededError(
                f"the pickle needs more than {self.limits.max_operations} operations"
            )

    def spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise BudgetExceededError("the results expand to too many values")

    def array_elements(self, count: int) -> None:
        self.elements -= count
        if self.elements < 0:
            raise BudgetExceededError(
                f"the results hold more than {self.limits.max_array_elements} array elements"
            )


# ---------------------------------------------------------------- dtypes

_NUMERIC_DTYPE = re.compile(r"^(b1|[iu][1248]|f[248]|c(8|16))$")
_TEXT_DTYPE = re.compile(r"^([SU])([1-9][0-9]{0,6})$")
_TIME_DTYPE = re.compile(r"^[Mm]8$")
_TIME_UNITS = frozenset({"Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"})
_ByteOrder = Literal["<", ">", "=", "|"]
_BYTE_ORDERS: dict[str, _ByteOrder] = {"<": "<", ">": ">", "=": "=", "|": "|"}  # typed set
MAX_TEXT_ITEM_BYTES = 1024 * 1024


class _DtypeSpec:
    """A pickled ``numpy.dtype``: only its name and state are recorded, never applied."""

    def __init__(self, name: Any) -> None:
        if not isinstance(name, str):
            raise UnsafePickleError("numpy.dtype was called with a non-string name")
        self.name = name
        self.state: Any = None

    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype, built from a validated dtype string."""
        name = self.name
        if name.startswith("O"):
            raise UnsafePickleError("numpy arrays of Python objects are not allowed")
        order, unit = self._checked_state()
        if _NUMERIC_DTYPE.match(name):
            text = name
        elif match := _TEXT_DTYPE.match(name):
            text = name
            width = int(match.group(2)) * (4 if match.group(1) == "U" else 1)
            if width > MAX_TEXT_ITEM_BYTES:
                raise BudgetExceededError(f"numpy dtype {name} is too wide")
        elif _TIME_DTYPE.match(name):
            text = f"{name}[{unit}]" if unit else name
        else:
            raise UnsafePickleError(f"numpy dtype {name[:40]!r} is not allowed")
        dtype = np.dtype(text)
        return dtype.newbyteorder(order) if order in "<>" else dtype

    def _checked_state(self) -> tuple[_ByteOrder, str]:
        """Byte order and datetime unit from the recorded state; anything else is refused."""
        state = self.state
        if state is None:
            return "=", ""
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise UnsafePickleError("a numpy dtype has a malformed state")
        order, subarray, names, fields = state[1:5]
        if order not in _BYTE_ORDERS:
            raise UnsafePickleError("a numpy dtype has an invalid byte order")
        if subarray is not None or names is not None or fields is not None:
            raise UnsafePickleError("structured and sub-array numpy dtypes are not allowed")
        return _BYTE_ORDERS[order], _time_unit(state[8]) if len(state) == 9 else ""


def _time_unit(metadata: Any) -> str:
    """``(None, (b'ns', 1, 1, 1))`` → ``"ns"`` (datetime64 metadata), validated."""
    if metadata is None:
        return ""
    try:
        unit, multiple = metadata[1][0], metadata[1][1]
        unit = unit.decode("ascii") if isinstance(unit, bytes) else unit
    except (TypeError, IndexError, AttributeError, UnicodeDecodeError):
        raise UnsafePickleError("a numpy datetime dtype has malformed metadata") from None
    if unit not in _TIME_UNITS or not isinstance(multiple, int) or not 1 <= multiple <= 1000:
        raise UnsafePickleError("a numpy datetime dtype has an invalid unit")
    return f"{multiple}{unit}" if multiple != 1 else str(unit)


def _vetted_dtype(value: Any) -> np.dtype[Any]:
    if not isinstance(value, _DtypeSpec):
        raise UnsafePickleError("expected a numpy dtype")
    return value.dtype()


# ---------------------------------------------------------------- arrays and scalars


def _element_count(shape: Any, budget: _Budget) -> int:
    if not isinstance(shape, tuple) or len(shape) > budget.limits.max_dimensions:
        raise CorruptPayloadError("a numpy array has an invalid shape")
    count = 1
    for size in shape:
        if type(size) is not int or size < 0:
            raise CorruptPayloadError("a numpy array has an invalid shape")
        count *= size
        if count > budget.limits.max_array_elements:
            raise BudgetExceededError(
                f"an array declares more than {budget.limits.max_array_elements} elements"
            )
    return count


def _owned_bytes(buffer: Any) -> bytes:
    if isinstance(buffer, bytes):
        return buffer
    if isinstance(buffer, bytearray | memoryview):
        return bytes(buffer)
    raise UnsafePickleError("numpy arrays of Python objects are not allowed")


def _build_array(
    budget: _Budget, dtype: np.dtype[Any], shape: Any, raw: Any, fortran: bool
) -> np.ndarray[Any, Any]:
    """An array from a validated dtype, shape and exactly the right number of bytes."""
    count = _element_count(shape, budget)
    data = _owned_bytes(raw)
    if len(data) != count * dtype.itemsize:
        raise CorruptPayloadError("a numpy array's bytes do not match its shape and dtype")
    array = np.frombuffer(data, dtype=dtype, count=count).copy()
    if fortran:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def _scalar(budget: _Budget, dtype: Any, data: Any = None) -> Any:
    checked = _vetted_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != checked.itemsize:
        raise CorruptPayloadError("a numpy scalar has the wrong number of bytes")
    return np.frombuffer(data, dtype=checked, count=1)[0]


def _reconstruct(budget: _Budget, subtype: Any, shape: Any, typecode: Any) -> _PendingArray:
    if subtype is not NDARRAY:
        raise UnsafePickleError(f"numpy array subclass {_describe(subtype)} is not allowed")
    return _PendingArray()


def _frombuffer(
    budget: _Budget, buffer: Any, dtype: Any, shape: Any, order: Any
) -> np.ndarray[Any, Any]:
    return _build_array(budget, _vetted_dtype(dtype), shape, buffer, order == "F")


def _array_from_state(budget: _Budget, state: Any) -> np.ndarray[Any, Any]:
    """``ndarray.__reduce__``'s state ``(version, shape, dtype, is_fortran, raw bytes)``."""
    if not isinstance(state, tuple) or len(state) != 5:
        raise CorruptPayloadError("a numpy array has a malformed state")
    _, shape, dtype, fortran, raw = state
    return _build_array(budget, _vetted_dtype(dtype), shape, raw, fortran is True)


# ---------------------------------------------------------------- containers and builtins

_SCALAR_TYPES = (str, bytes, int, float, bool, type(None))


def _check_key(key: Any) -> Any:
    """Dict keys and set items must be plain scalars: hashing a nested structure of shared
    tuples costs exponential time, and NaN keys never compare equal (quadratic inserts)."""
    if isinstance(key, np.generic):
        if key.dtype.kind not in "biufSUMm":
            raise UnsafePickleError(f"a numpy {key.dtype} cannot be a dict key or set item")
        key = key.item() if key.dtype.kind == "f" else key
    if not isinstance(key, (*_SCALAR_TYPES, np.generic)):
        raise UnsafePickleError(f"a {type(key).__name__} cannot be a dict key or set item")
    if isinstance(key, float) and not math.isfinite(key):
        raise UnsafePickleError("NaN and infinities cannot be dict keys or set items")
    return key


def _check_pairs(items: Any) -> list[tuple[Any, Any]]:
    pairs = []
    for pair in items:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise UnsafePickleError("a dict was rebuilt with unexpected arguments")
        pairs.append((_check_key(pair[0]), pair[1]))
    return pairs


def _plain_dict(budget: _Budget, *args: Any) -> PlainDict:
    if len(args) > 1 or (args and not isinstance(args[0], list | tuple | dict)):
        raise UnsafePickleError("a dict was rebuilt with unexpected arguments")
    if not args:
        return PlainDict()
    budget.work(len(args[0]))
    items = args[0].items() if isinstance(args[0], dict) else args[0]
    return PlainDict(_check_pairs(items))


def _latin1_encode(budget: _Budget, text: Any, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in {"latin1", "latin-1"}:
        raise UnsafePickleError("_codecs.encode is only allowed for latin1 text")
    budget.work(len(text) // 64)
    try:
        return codecs.encode(text, "latin1")
    except UnicodeEncodeError:
        raise CorruptPayloadError("latin1 text holds characters beyond latin1") from None


def _set(budget: _Budget, items: Any = ()) -> set[Any]:
    if not isinstance(items, list | tuple):
        raise UnsafePickleError("a set was rebuilt with unexpected arguments")
    budget.work(len(items))
    return {_check_key(item) for item in items}


def _frozenset(budget: _Budget, items: Any = ()) -> frozenset[Any]:
    return frozenset(_set(budget, items))


def _complex(budget: _Budget, real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(isinstance(v, int | float) for v in (real, imag)):
        raise UnsafePickleError("complex() was called with non-numbers")
    return complex(real, imag)


def _bytearray(budget: _Budget, data: Any = b"") -> bytearray:
    if not isinstance(data, bytes | bytearray):
        raise UnsafePickleError("bytearray() was called with a non-bytes argument")
    budget.work(len(data) // 64)
    return bytearray(data)


_NUMPY_MODULES = (
    "numpy",
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core.numeric",
    "numpy._core.numeric",
)
_NUMPY_CALLABLES: dict[str, Callable[..., Any]] = {
    "scalar": _scalar,
    "_reconstruct": _reconstruct,
    "_frombuffer": _frombuffer,
}
_BUILTIN_CALLABLES: dict[str, Callable[..., Any]] = {
    "dict": _plain_dict,
    "set": _set,
    "frozenset": _frozenset,
    "complex": _complex,
    "bytearray": _bytearray,
}
# Every global a pickle may name. Callables here are bound to the decode's budget.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(m, n): v for m in _NUMPY_MODULES for n, v in _NUMPY_CALLABLES.items()},
    **{(m, n): NDARRAY for m in _NUMPY_MODULES for n in ("ndarray", "matrix", "memmap")},
    **{(m, "dtype"): _DtypeSpec for m in _NUMPY_MODULES},
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _ArrayWrapperState,
    ("collections", "OrderedDict"): _plain_dict,
    ("sncosmo.utils", "Result"): _plain_dict,
    ("_codecs", "encode"): _latin1_encode,
    # Python 3 writes Python 2 module names (__builtin__, copy_reg) for protocols < 3.
    **{(m, "_reconstructor"): "_reconstructor" for m in ("copyreg", "copy_reg")},
    **{(m, "object"): OBJECT for m in ("builtins", "__builtin__")},
    **{(m, n): v for m in ("builtins", "__builtin__") for n, v in _BUILTIN_CALLABLES.items()},
}
_BUDGETED: frozenset[Callable[..., Any]] = frozenset(
    (_plain_dict, _latin1_encode, *_NUMPY_CALLABLES.values(), *_BUILTIN_CALLABLES.values())
)


class _OpcodeTable(Protocol):
    def __getitem__(self, opcode: int, /) -> Callable[..., None]: ...


if TYPE_CHECKING:

    class _PurePythonUnpickler:
        """``pickle._Unpickler`` as this module uses it: typeshed declares its public methods
        only, not the opcode table, stack and helpers the pure-Python unpickler works with."""

        dispatch: _OpcodeTable  # read as ``self.dispatch``: an instance may shadow the table
        stack: list[Any]

        def __init__(self, file: io.BytesIO) -> None: ...
        def load(self) -> Any: ...
        def find_class(self, module: str, name: str) -> Any: ...
        def persistent_load(self, pid: Any) -> Any: ...
        def read(self, size: int, /) -> bytes: ...
        def readline(self) -> bytes: ...
        def append(self, value: Any, /) -> None: ...
        def pop_mark(self) -> list[Any]: ...
        def load_get(self) -> None: ...
        def load_binget(self) -> None: ...
        def load_long_binget(self) -> None: ...

else:
    _PurePythonUnpickler = pickle._Unpickler


class _MeteredDispatch:
    """The unpickler's opcode table, charging one operation per opcode read."""

    def __init__(self, table: _OpcodeTable, budget: _Budget) -> None:
        self.table = table
        self.budget = budget

    def __getitem__(self, opcode: int) -> Callable[..., None]:
        self.budget.work(1)
        try:
            return self.table[opcode]
        except KeyError:
            raise CorruptPayloadError(f"invalid pickle opcode {opcode:#04x}") from None


class RestrictedUnpickler(_PurePythonUnpickler):
    """joblib-aware unpickler that resolves only allow-listed globals, within a budget.

    Built on the pure-Python unpickler (as joblib's NumpyUnpickler is) so that every opcode
    can be counted and BUILD intercepted, and array bytes read from the stream right after a
    wrapper.
    """

    # pickle's opcode table, some of its handlers replaced by the methods below
    opcodes: ClassVar[dict[int, Callable[[Any], None]]] = pickle._Unpickler.dispatch.copy()

    def __init__(self, stream: io.BytesIO, budget: _Budget) -> None:
        super().__init__(stream)
        self._stream = stream
        self._budget = budget
        self.dispatch = _MeteredDispatch(type(self).opcodes, budget)
        self._globals = {key: self._bind(value) for key, value in ALLOWED_GLOBALS.items()}
        self._dict_factory = self._globals[("builtins", "dict")]

    def _bind(self, value: Any) -> Any:
        if value == "_reconstructor":
            return self._copyreg_reconstructor
        if value in _BUDGETED:
            return partial(value, self._budget)
        return value

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = self._globals[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the pickle references {module}.{name}, which is not allowed"
            ) from None
        # Every dict subclass becomes the same factory, so that NEWOBJ can recognise it.
        if isinstance(found, partial) and found.func is _plain_dict:
            return self._dict_factory
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent references are not allowed")

    def _copyreg_reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """Protocols 0 and 1 rebuild objects this way; the base class given is ignored."""
        if cls is _ArrayWrapperState:
            return _ArrayWrapperState()
        if cls is not self._dict_factory:
            raise UnsafePickleError(f"copyreg._reconstructor for {_describe(cls)} is not allowed")
        return self._dict_factory(state) if isinstance(state, dict) else PlainDict()

    def _new_object(self, cls: Any, args: Any) -> Any:
        if cls is _DtypeSpec:
            if not isinstance(args, tuple) or not args:
                raise UnsafePickleError("numpy.dtype was created without a name")
            return _DtypeSpec(args[0])
        if cls is _ArrayWrapperState:
            return _ArrayWrapperState()
        if cls is self._dict_factory:
            return PlainDict()
        raise UnsafePickleError(f"creating {_describe(cls)} is not allowed")

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.stack.append(self._new_object(cls, args))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if kwargs:
            raise UnsafePickleError("keyword arguments to __new__ are not allowed")
        self.stack.append(self._new_object(cls, args))

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not isinstance(args, tuple):
            raise CorruptPayloadError("REDUCE needs an argument tuple")
        if func is _DtypeSpec:
            self.stack[-1] = _DtypeSpec(args[0] if args else None)
        elif func is _ArrayWrapperState:
            self.stack[-1] = _ArrayWrapperState()
        elif callable(func) and not isinstance(func, type):
            self.stack[-1] = func(*args)
        else:
            raise UnsafePickleError(f"calling {_describe(func)} is not allowed")

    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, _ArrayWrapperState):
            target.array = self._read_wrapped_array(state)
            self.stack[-1] = target.array
        elif isinstance(target, _PendingArray):
            target.array = _array_from_state(self._budget, state)
            self.stack[-1] = target.array
        elif isinstance(target, _DtypeSpec):
            target.state = state
            target.dtype()  # refuse a bad state as soon as it is read
        elif isinstance(target, PlainDict):
            pass  # instance attributes of a dict subclass (e.g. deprecation notes): dropped
        else:
            raise UnsafePickleError(f"setting the state of {type(target).__name__} is not allowed")

    def _read_wrapped_array(self, state: Any) -> np.ndarray[Any, Any]:
        if not isinstance(state, dict):
            raise CorruptPayloadError("a joblib array wrapper has no state")
        dtype = _vetted_dtype(state.get("dtype"))
        count = _element_count(state.get("shape"), self._budget)
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self._stream.read(1)
            self._stream.read(int.from_bytes(padding or b"\0", "little"))
        raw = self._stream.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise CorruptPayloadError("a joblib array is truncated")
        return _build_array(self._budget, dtype, state["shape"], raw, state.get("order") == "F")

    # Memo references to an array that was built later resolve to the array.
    def _resolve_top(self) -> None:
        top = self.stack[-1]
        if isinstance(top, _Placeholder) and top.array is not None:
            self.stack[-1] = top.array

    def load_get(self) -> None:
        super().load_get()
        self._resolve_top()

    def load_binget(self) -> None:
        super().load_binget()
        self._resolve_top()

    def load_long_binget(self) -> None:
        super().load_long_binget()
        self._resolve_top()

    # Integers are bounded before they are converted.
    def _small_int(self, text: bytes) -> int:
        if len(text.strip()) > 24:
            raise BudgetExceededError("the pickle holds an integer that is too large")
        return self._in_range(int(text, 0))

    def _in_range(self, value: int) -> int:
        if not -(2**63) <= value < 2**self._budget.limits.max_int_bits:
            raise BudgetExceededError("the pickle holds an integer that is too large")
        return value

    def load_int(self) -> None:
        data = self.readline()
        if data in (b"00\n", b"01\n"):
            self.append(data == b"01\n")
        else:
            self.append(self._small_int(data))

    def load_long(self) -> None:
        text = self.readline()[:-1]
        self.append(self._small_int(text[:-1] if text.endswith(b"L") else text))

    def _long_bytes(self, size: int) -> None:
        if not 0 <= size <= 9:
            raise BudgetExceededError("the pickle holds an integer that is too large")
        data = self.read(size)
        self.append(self._in_range(int.from_bytes(data, "little", signed=True)))

    def load_long1(self) -> None:
        self._long_bytes(self.read(1)[0])

    def load_long4(self) -> None:
        (size,) = struct.unpack("<i", self.read(4))
        self._long_bytes(size)

    # Only plain containers are filled, with plain scalar keys.
    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._target(dict)[_check_key(key)] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target(dict)
        for index in range(0, len(items) - 1, 2):
            target[_check_key(items[index])] = items[index + 1]

    def load_dict(self) -> None:
        items = self.pop_mark()
        self.append({_check_key(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)})

    def load_additems(self) -> None:
        items = self.pop_mark()
        self._target(set).update(_check_key(item) for item in items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self.append(frozenset(_check_key(item) for item in items))

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._target(list).extend(items)

    def load_append(self) -> None:
        value = self.stack.pop()
        self._target(list).append(value)

    def _target(self, kind: type) -> Any:
        target = self.stack[-1] if self.stack else None
        if not isinstance(target, kind):
            raise UnsafePickleError(f"only a {kind.__name__} can be filled this way")
        return target

    opcodes[pickle.NEWOBJ[0]] = load_newobj
    opcodes[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    opcodes[pickle.REDUCE[0]] = load_reduce
    opcodes[pickle.BUILD[0]] = load_build
    opcodes[pickle.GET[0]] = load_get
    opcodes[pickle.BINGET[0]] = load_binget
    opcodes[pickle.LONG_BINGET[0]] = load_long_binget
    opcodes[pickle.INT[0]] = load_int
    opcodes[pickle.LONG[0]] = load_long
    opcodes[pickle.LONG1[0]] = load_long1
    opcodes[pickle.LONG4[0]] = load_long4
    opcodes[pickle.SETITEM[0]] = load_setitem
    opcodes[pickle.SETITEMS[0]] = load_setitems
    opcodes[pickle.DICT[0]] = load_dict
    opcodes[pickle.ADDITEMS[0]] = load_additems
    opcodes[pickle.FROZENSET[0]] = load_frozenset
    opcodes[pickle.APPENDS[0]] = load_appends
    opcodes[pickle.APPEND[0]] = load_append


# ---------------------------------------------------------------- decompression


def _bounded(decompressor: Any, data: bytes, limit: int) -> bytes:
    out = bytearray()
    pending = data
    while True:
        chunk = decompressor.decompress(pending, limit + 1 - len(out))
        out += chunk
        if len(out) > limit:
            raise BudgetExceededError(f"the decompressed results exceed {limit} bytes")
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
            except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
                if isinstance(exc, SafeDecodeError):
                    raise
                raise CorruptPayloadError(f"the compressed results are corrupt: {exc}") from None
    # No compressor magic: an uncompressed pickle of protocol 0 or 1 (or garbage, which the
    # unpickler rejects).
    if len(data) > max_bytes:
        raise BudgetExceededError(f"the results exceed {max_bytes} bytes")
    return data


# ---------------------------------------------------------------- entry points


def _limits(max_bytes: int | None, max_values: int | None, limits: DecodeLimits) -> DecodeLimits:
    changes: dict[str, int] = {}
    if max_bytes is not None:
        changes["max_bytes"] = max_bytes
    if max_values is not None:
        changes["max_values"] = max_values
    return DecodeLimits(**{**limits.__dict__, **changes}) if changes else limits


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _load(data: bytes, budget: _Budget) -> Any:
    try:
        stream = io.BytesIO(decompress_joblib(data, budget.limits.max_bytes))
        value = RestrictedUnpickler(stream, budget).load()
    except SafeDecodeError:
        raise
    except RecursionError:
        raise CorruptPayloadError("the results are nested too deeply") from None
    except Exception as exc:  # any other failure of a hostile stream is still a refusal
        raise CorruptPayloadError(f"the results could not be decoded: {_short(exc)}") from None
    if isinstance(value, _Placeholder):
        value = value.array
    return value


def load_joblib_safely(
    data: bytes, max_bytes: int | None = None, limits: DecodeLimits = DecodeLimits()
) -> Any:
    """The object in a joblib file, built only from allow-listed types; never executes code."""
    return _load(data, _Budget(_limits(max_bytes, None, limits)))


def _jsonable(value: Any, budget: _Budget, depth: int) -> Any:
    budget.spend(1)
    if depth > budget.limits.max_depth:
        raise BudgetExceededError("the results are nested too deeply")
    if isinstance(value, _Placeholder):
        if value.array is None:
            raise CorruptPayloadError("an array was referenced before it was built")
        value = value.array
    if isinstance(value, dict):
        return {_json_key(k): _jsonable(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_jsonable(v, budget, depth + 1) for v in items]
    if isinstance(value, np.ndarray):
        budget.array_elements(value.size)
        return _array_list(value, budget, depth)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), budget, depth)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, complex):
        return {
            "real": _jsonable(value.real, budget, depth),
            "imag": _jsonable(value.imag, budget, depth),
        }
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if value is None or isinstance(value, bool | int | str):
        return value
    raise UnsafePickleError(f"values of type {type(value).__name__} cannot be returned")


def _array_list(array: np.ndarray[Any, Any], budget: _Budget, depth: int) -> Any:
    """Without visiting each element in Python where numpy can do the work."""
    if array.ndim > budget.limits.max_dimensions:
        raise BudgetExceededError("an array has too many dimensions")
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
    if array.dtype.kind not in "cS":
        raise UnsafePickleError(f"numpy arrays of kind {array.dtype.kind!r} cannot be returned")
    # complex and bytes elements are converted one by one (and counted) below
    return _jsonable(array.tolist(), budget, depth)


def _json_key(key: Any) -> str:
    if isinstance(key, np.generic):
        key = key.item()
    return key if isinstance(key, str) else str(key)


def joblib_to_json(
    data: bytes,
    max_bytes: int | None = None,
    max_values: int | None = None,
    limits: DecodeLimits = DecodeLimits(),
) -> Any:
    """Decode a joblib file safely into plain JSON values (CPU-bound: call it in a thread).

    Every failure, whatever its cause, is a :class:`SafeDecodeError` with a message."""
    budget = _Budget(_limits(max_bytes, max_values, limits))
    value = _load(data, budget)
    try:
        return _jsonable(value, budget, 0)
    except SafeDecodeError:
        raise
    except RecursionError:
        raise CorruptPayloadError("the results are nested too deeply") from None
    except Exception as exc:
        raise CorruptPayloadError(f"the results could not be converted: {_short(exc)}") from None


# ---------------------------------------------------------------- netCDF / HDF5

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_VARIABLE_LENGTH_ITEM_BYTES = 16  # what one variable-length string costs at least once read


@dataclass(frozen=True)
class NetcdfLimits:
    """What reading one group of a netCDF file may cost, checked before any data is read."""

    max_bytes: int = 64 * 1024 * 1024  # declared shape x item size, summed over the variables
    max_elements: int = 8_000_000  # elements, summed (each becomes a float64 when drawn)
    max_variables: int = 1_000
    max_dimensions: int = 32


class NetcdfGroupMissing(SafeDecodeError):
    """The file has no such group."""


@dataclass(frozen=True)
class NetcdfVariable:
    dims: tuple[str, ...]
    values: np.ndarray[Any, Any]


def _declared_items(data: bytes, group: str | None) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, item size) of every variable of a group, from the metadata only."""
    if data.startswith(HDF5_MAGIC):
        return _hdf5_declared(data, group)
    if group is not None:
        raise NetcdfGroupMissing(f"a classic netCDF file has no {group} group")
    return _classic_declared(data)


def _hdf5_declared(data: bytes, group: str | None) -> list[tuple[str, tuple[int, ...], int]]:
    import h5netcdf

    with h5netcdf.File(io.BytesIO(data), "r", phony_dims="access") as handle:
        node = handle
        if group is not None:
            if group not in handle.groups:
                raise NetcdfGroupMissing(f"the file has no {group} group")
            node = handle.groups[group]
        return [
            (str(name), tuple(int(n) for n in var.shape), _item_size(var.dtype))
            for name, var in node.variables.items()
        ]


def _classic_declared(data: bytes) -> list[tuple[str, tuple[int, ...], int]]:
    """Classic netCDF: scipy reads the whole (size-limited) file, never more than its bytes."""
    from scipy.io import netcdf_file

    with netcdf_file(io.BytesIO(data), "r", mmap=False) as handle:
        return [
            (str(name), tuple(int(n) for n in var.shape), _item_size(var.data.dtype))
            for name, var in handle.variables.items()
        ]


def _item_size(dtype: Any) -> int:
    try:
        checked = np.dtype(dtype)
    except TypeError:
        return _VARIABLE_LENGTH_ITEM_BYTES
    return max(checked.itemsize, _VARIABLE_LENGTH_ITEM_BYTES if checked.kind == "O" else 1)


def check_netcdf_group(
    data: bytes, group: str | None, limits: NetcdfLimits = NetcdfLimits()
) -> None:
    """Refuse (SafeDecodeError) a group whose declared data exceeds the budget, before reading
    any of it; NetcdfGroupMissing when the group does not exist."""
    try:
        declared = _declared_items(data, group)
    except SafeDecodeError:
        raise
    except Exception as exc:  # h5py/scipy raise many types for a malformed file
        raise CorruptPayloadError(f"not a readable netCDF/HDF5 file ({_short(exc)})") from None
    if len(declared) > limits.max_variables:
        raise BudgetExceededError(f"the file has more than {limits.max_variables} variables")
    total_bytes = total_elements = 0
    for name, shape, item_size in declared:
        if len(shape) > limits.max_dimensions:
            raise BudgetExceededError(f"variable {name} has too many dimensions")
        elements = math.prod(shape)
        total_elements += elements
        total_bytes += elements * item_size
        if total_elements > limits.max_elements or total_bytes > limits.max_bytes:
            raise BudgetExceededError(
                f"variable {name} declares {elements} elements of {item_size} bytes: the "
                f"file would need more than {limits.max_bytes} bytes or "
                f"{limits.max_elements} elements"
            )


def check_netcdf(data: bytes, limits: NetcdfLimits = NetcdfLimits()) -> None:
    """Everything skyhook will ever read of an inference-data file is within the budget: the
    ``posterior`` group (when there is one) and the root group."""
    for group in ("posterior", None):
        try:
            check_netcdf_group(data, group, limits)
        except NetcdfGroupMissing:
            continue


def read_netcdf_variables(
    data: bytes, group: str | None, limits: NetcdfLimits = NetcdfLimits()
) -> dict[str, NetcdfVariable]:
    """The data variables of one group (the root when None), as numpy arrays with their
    dimension names, after the group's declared size has been checked against the budget."""
    check_netcdf_group(data, group, limits)
    import xarray as xr

    engine = "h5netcdf" if data.startswith(HDF5_MAGIC) else "scipy"
    try:
        with xr.open_dataset(io.BytesIO(data), engine=engine, group=group) as dataset:
            return {
                str(name): NetcdfVariable(tuple(map(str, var.dims)), np.asarray(var.values))
                for name, var in dataset.data_vars.items()
            }
    except Exception as exc:
        raise CorruptPayloadError(f"not a readable netCDF/HDF5 file ({_short(exc)})") from None
