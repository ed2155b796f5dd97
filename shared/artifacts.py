"""Artifact storage: files under ``SKYHOOK_ARTIFACT_DIR/<analysis unique_id>/``.

Every stored artifact is described by an :class:`ArtifactRef` (name, relative path, size,
sha256, media type) that goes into ``ObjAnalysis.artifacts``; absolute paths never leave the
server. Writes are atomic (temp file + rename) and run in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class ArtifactRef:
    name: str
    path: str  # relative to the artifact root
    size: int
    sha256: str
    media_type: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRef:
        return cls(**{k: data[k] for k in ("name", "path", "size", "sha256", "media_type")})


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _folder(self, analysis_uid: str) -> Path:
        if not _SAFE.match(analysis_uid):
            raise ValueError(f"unsafe analysis id {analysis_uid!r}")
        return self.root / analysis_uid

    def _write(self, analysis_uid: str, name: str, data: bytes, media_type: str) -> ArtifactRef:
        if not _SAFE.match(name):
            raise ValueError(f"unsafe artifact name {name!r}")
        folder = self._folder(analysis_uid)
        folder.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, folder / name)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return ArtifactRef(
            name=name,
            path=f"{analysis_uid}/{name}",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            media_type=media_type,
        )

    async def put(self, analysis_uid: str, name: str, data: bytes, media_type: str) -> ArtifactRef:
        return await asyncio.to_thread(self._write, analysis_uid, name, data, media_type)

    def _resolve(self, ref: ArtifactRef | dict[str, Any]) -> Path:
        relative = ref.path if isinstance(ref, ArtifactRef) else str(ref["path"])
        path = (self.root / relative).resolve()
        if self.root not in path.parents:
            raise ValueError("artifact path escapes the artifact root")
        return path

    async def read(self, ref: ArtifactRef | dict[str, Any]) -> bytes:
        return await asyncio.to_thread(self._resolve(ref).read_bytes)

    def path_of(self, ref: ArtifactRef | dict[str, Any]) -> Path:
        """For streaming responses only; never put this path in a response body."""
        return self._resolve(ref)

    async def delete_all(self, analysis_uid: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._folder(analysis_uid), True)
