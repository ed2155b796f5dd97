"""Hostile joblib and netCDF payloads from the security review, and a forked-child runner
that reports a crash (a signal) as an outcome instead of dying with the test process."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h5py


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _short_bytes(value: bytes) -> bytes:
    return b"C" + bytes([len(value)]) + value


def _dtype(name: str, state: bytes) -> bytes:
    """GLOBAL numpy.dtype, REDUCE (name, False, True), BUILD with the given state opcodes."""
    return b"cnumpy\ndtype\n" + _text(name) + b"\x89\x88\x87R" + state + b"b"


def void_dtype_setstate() -> bytes:
    """dtype('V8') given the BUILD state (3, '|', None, 8, 1, 0): segfaults in numpy."""
    state = b"(K\x03" + _text("|") + b"NK\x08K\x01K\x00t"
    return b"\x80\x02" + _dtype("V8", state) + b"."


def object_dtype_frombuffer() -> bytes:
    """An object dtype whose flags are zeroed (so it passes a hasobject check), then
    ``_frombuffer`` over chosen bytes: numpy reads them as PyObject pointers."""
    minus_one = b"J\xff\xff\xff\xff"
    state = b"(K\x03" + _text("|") + b"NNN" + minus_one + minus_one + b"K\x00t"
    return (
        b"\x80\x02cnumpy.core.numeric\n_frombuffer\n("
        + _short_bytes(b"\x41" * 8)
        + _dtype("O8", state)
        + b"K\x01\x85"
        + _text("C")
        + b"tR."
    )


def structured_dtype_with_bad_fields() -> bytes:
    """A structured dtype whose fields point outside the item: refused, never applied."""
    fields = b"}" + _text("a") + b"cnumpy\ndtype\n" + _text("f8") + b"\x89\x88\x87RK\x40\x86s"
    state = b"(K\x03" + _text("|") + b"N" + _text("a") + b"\x85" + fields + b"K\x08K\x01K\x10t"
    return b"\x80\x02" + _dtype("V8", state) + b"."


def big_integer() -> bytes:
    return pickle.dumps({"n": 10**2999})


def memo_bomb() -> bytes:
    """Under 1 KB of pickle that references one list so often that the results would hold
    about 2.5 million values (what a reader pays on every decode)."""
    shared: list[Any] = list(range(10))
    for _ in range(5):
        shared = [shared] * 12
    return pickle.dumps(shared)


def hash_bomb(depth: int = 22) -> bytes:
    """A frozenset of a tuple that holds the same tuple twice, 22 levels deep: hashing it
    costs 2**22 steps, 200 bytes of pickle."""
    item: Any = (1, 2)
    for _ in range(depth):
        item = (item, item)
    return pickle.dumps(frozenset([item]))


# Every one must be refused (a SafeDecodeError), never crash nor decode.
HOSTILE_JOBLIB: dict[str, Callable[[], bytes]] = {
    "void dtype setstate": void_dtype_setstate,
    "object dtype frombuffer": object_dtype_frombuffer,
    "structured dtype with bad fields": structured_dtype_with_bad_fields,
    "3000-digit integer": big_integer,
    "memo bomb": memo_bomb,
    "hash bomb": hash_bomb,
}
CRASHERS = ("void dtype setstate", "object dtype frombuffer")


def hdf5_fill_value_bomb(elements: int = 30_000_000) -> bytes:
    """About 2.7 KB of HDF5 whose posterior declares ``elements`` float64 fill values."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        group = handle.create_group("posterior")
        chunks = (min(elements, 1_000_000),)
        group.create_dataset("x", shape=(elements,), dtype="f8", fillvalue=1.0, chunks=chunks)
        group.create_dataset("y", shape=(elements,), dtype="f8", fillvalue=2.0, chunks=chunks)
    return buffer.getvalue()


HOSTILE_NETCDF: dict[str, Callable[[], bytes]] = {
    "3e7 fill values": hdf5_fill_value_bomb,
    "1e12 fill values": lambda: hdf5_fill_value_bomb(10**12),
}


@dataclass(frozen=True)
class ChildOutcome:
    """How a call ended in a forked child: returned, raised (type and message) or died."""

    returned: bool = False
    raised: str = ""
    message: str = ""
    signal: int = 0

    def describe(self) -> str:
        if self.signal:
            return f"killed by {signal.Signals(self.signal).name}"
        return f"raised {self.raised}: {self.message}" if self.raised else "returned"


def run_in_child(function: Callable[[bytes], Any], data: bytes) -> ChildOutcome:
    """Call ``function(data)`` in a forked child; a segfault becomes ChildOutcome(signal=11)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any cleanup of the parent's
        os.close(read_end)
        try:
            function(data)
            report: dict[str, Any] = {"returned": True}
        except BaseException as exc:
            report = {"raised": type(exc).__name__, "message": str(exc)[:500]}
        with os.fdopen(write_end, "w") as out:
            out.write(json.dumps(report))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as incoming:
        text = incoming.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ChildOutcome(signal=os.WTERMSIG(status))
    return ChildOutcome(**json.loads(text))
