"""The artifact store on both databases: content addressing, replacing a name, deletes that
take unreferenced blobs with them, streaming slices, and writes that roll back with their
transaction."""

from __future__ import annotations

import hashlib
import os

import pytest
from sqlalchemy.exc import IntegrityError

from shared.db.models import ObjAnalysis
from shared.domain.artifacts import ArtifactMissing, NewArtifact, delete_artifacts, write_artifacts
from shared.runtime.resources import Resources
from tests.support.analyses import insert_analysis, make_obj, make_service
from tests.support.api import Accounts
from tests.support.artifacts import artifact_names, blob_exists, links_of, unreferenced_blobs

pytestmark = pytest.mark.usefixtures("backend")


async def _analyses(resources: Resources, accounts: Accounts, count: int) -> list[ObjAnalysis]:
    group = await accounts.group()
    author = await accounts.user(groups=(group,))
    obj_id = await make_obj(resources, [group])
    service = await make_service(resources, [group])
    return [
        await insert_analysis(resources, obj_id=obj_id, service_id=service.id, author_id=author.id)
        for _ in range(count)
    ]


async def _write(
    resources: Resources, analysis: ObjAnalysis, *files: NewArtifact, replace: bool = False
) -> None:
    async with resources.sessions.begin() as session:
        await write_artifacts(session, analysis.id, files, replace=replace)


def test_a_ref_describes_the_bytes_by_name_never_by_place() -> None:
    file = NewArtifact("plot_0.png", b"\x89PNG data", "image/png")
    assert file.ref("0d4a3c9e-uid").to_dict() == {
        "name": "plot_0.png",
        "path": "0d4a3c9e-uid/plot_0.png",
        "size": 9,
        "sha256": hashlib.sha256(b"\x89PNG data").hexdigest(),
        "media_type": "image/png",
    }
    for unsafe in ("../x", "a/b", "", "x" * 256):
        with pytest.raises(ValueError, match="unsafe artifact name"):
            NewArtifact(unsafe, b"", "text/plain")


async def test_equal_bytes_are_one_blob_and_live_while_referenced(
    resources: Resources, accounts: Accounts
) -> None:
    first, second = await _analyses(resources, accounts, 2)
    same = os.urandom(64)
    shared = NewArtifact("a.bin", same, "application/octet-stream")
    await _write(resources, first, shared, NewArtifact("b.bin", same, "application/octet-stream"))
    await _write(resources, second, shared)
    assert await artifact_names(resources, first.unique_id) == ["a.bin", "b.bin"]
    assert await resources.artifacts.read(shared.ref(second.unique_id).to_dict()) == same

    async with resources.sessions.begin() as session:
        await delete_artifacts(session, [first.id])
    assert await links_of(resources, [first.id]) == 0
    assert await blob_exists(resources, shared.sha256)  # the second analysis still has it
    async with resources.sessions.begin() as session:
        await delete_artifacts(session, [second.id])
    assert not await blob_exists(resources, shared.sha256)
    assert await unreferenced_blobs(resources) == []


async def test_replacing_a_name_drops_the_old_bytes(
    resources: Resources, accounts: Accounts
) -> None:
    (analysis,) = await _analyses(resources, accounts, 1)
    old = NewArtifact("corner.png", os.urandom(32), "image/png")
    new = NewArtifact("corner.png", os.urandom(32), "image/png")
    await _write(resources, analysis, old)
    with pytest.raises(IntegrityError):
        await _write(resources, analysis, new)  # without replace, a name is written once
    await _write(resources, analysis, new, replace=True)
    assert await resources.artifacts.read(new.ref(analysis.unique_id)) == new.data
    assert not await blob_exists(resources, old.sha256)
    await _write(resources, analysis, new, replace=True)  # the same bytes again: kept
    assert await resources.artifacts.read(new.ref(analysis.unique_id)) == new.data
    assert await unreferenced_blobs(resources) == []


async def test_a_rolled_back_write_leaves_nothing(resources: Resources, accounts: Accounts) -> None:
    (analysis,) = await _analyses(resources, accounts, 1)
    file = NewArtifact("inputs.json", os.urandom(40), "application/json")
    with pytest.raises(RuntimeError):
        async with resources.sessions.begin() as session:
            await write_artifacts(session, analysis.id, [file])
            raise RuntimeError("the claim failed")
    assert await artifact_names(resources, analysis.unique_id) == []
    assert not await blob_exists(resources, file.sha256)
    with pytest.raises(ArtifactMissing):
        await resources.artifacts.read(file.ref(analysis.unique_id))


async def test_bytes_come_back_in_slices(resources: Resources, accounts: Accounts) -> None:
    (analysis,) = await _analyses(resources, accounts, 1)
    data = os.urandom(10_000)
    file = NewArtifact("big.bin", data, "application/octet-stream")
    await _write(resources, analysis, file)
    ref = file.ref(analysis.unique_id)
    parts = [p async for p in resources.artifacts.chunks(ref, chunk_bytes=4096)]
    assert [len(p) for p in parts] == [4096, 4096, 1808]
    assert b"".join(parts) == data
    assert await resources.artifacts.size(ref) == len(data)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite: one writer
async def test_a_delete_never_takes_a_blob_a_concurrent_writer_is_sharing(
    resources: Resources, accounts: Accounts
) -> None:
    """PostgreSQL: the writer's upsert locks the existing blob; the delete's garbage
    collection skips it instead of removing bytes the writer is about to link."""
    doomed, writer = await _analyses(resources, accounts, 2)
    file = NewArtifact("results.json", os.urandom(48), "application/json")
    await _write(resources, doomed, file)
    async with resources.sessions.begin() as writing:
        await write_artifacts(writing, writer.id, [file])  # not committed yet
        async with resources.sessions.begin() as deleting:
            await delete_artifacts(deleting, [doomed.id])  # does not wait for the writer
    assert await links_of(resources, [doomed.id]) == 0
    assert await resources.artifacts.read(file.ref(writer.unique_id)) == file.data
    assert await unreferenced_blobs(resources) == []
