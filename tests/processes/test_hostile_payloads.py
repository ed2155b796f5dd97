"""Hostile results sent through the real webhook receiver and the real upload endpoint of a
deployment (one OS process per service): each is refused with 400, and afterwards every
process is still running and answering. On main, the gateway dies (SIGSEGV) on the first read
of a crafted pickle's results."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from tests.processes.conftest import (
    Deployment,
    analysis_service,
    source_with_photometry,
    user_api,
)
from tests.processes.test_multiprocess import group_id, register
from tests.support.api import ApiClient
from tests.support.fake_service import callback_token
from tests.support.hostile import HOSTILE_JOBLIB, HOSTILE_NETCDF

pytestmark = pytest.mark.asyncio(loop_scope="module")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


HOSTILE: dict[str, dict[str, Any]] = {
    **{
        f"joblib {name}": {"results": {"format": "joblib", "data": b64(make())}}
        for name, make in HOSTILE_JOBLIB.items()
    },
    **{
        f"netCDF {name}": {"inference_data": {"format": "netcdf4", "data": b64(make())}}
        for name, make in HOSTILE_NETCDF.items()
    },
}


class HostileService:
    """Calls back each analysis with the next hostile payload, remembering which got which."""

    def __init__(self) -> None:
        self.cases = list(HOSTILE)
        self.sent: dict[str, str] = {}  # callback token → case

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        case = self.cases[len(self.sent) % len(self.cases)]
        self.sent[callback_token(payload)] = case
        return {"status": "success", "message": "done", "analysis": HOSTILE[case]}


async def still_answering(api: ApiClient, deployment: Deployment) -> None:
    for name, process in deployment.processes.items():
        assert process.popen.poll() is None, f"{name} died:\n{process.log_tail()}"
    for name in ("gateway", "webhook-receiver"):
        assert api.http is not None
        async with api.http.get(f"{deployment.url(name)}/readyz") as response:
            assert response.status == 200, name
    await api.ok("GET", "/api/groups")


async def test_the_server_still_answers_after_every_hostile_payload(
    deployment: Deployment,
) -> None:
    hostile = HostileService()
    async with analysis_service(hostile) as service:
        name = f"hostile-{uuid.uuid4().hex[:8]}"
        api = await user_api(deployment, name)
        try:
            group = await group_id(api, name)
            obj_id = await source_with_photometry(api, group)
            service_id = await register(api, group, service.url)
            path = f"/api/obj/{obj_id}/analysis/{service_id}"
            ids = [int((await api.ok("POST", path, json={}))["id"]) for _ in HOSTILE]
            await service.wait_until(
                lambda: len(service.refusals) + service.accepted.total() == len(HOSTILE),
                "every callback answered",
                within=60,
            )
            for analysis_id in ids:  # whatever was stored, reading it must be harmless
                for product in ("results", "corner"):
                    await api.call("GET", f"/api/obj/analysis/{analysis_id}/{product}")
            await still_answering(api, deployment)
            # Refused at ingest: nothing was stored, so there was nothing to read.
            assert not service.accepted
            assert {status for status, _ in service.refusals} == {400}
            assert all("Invalid analysis." in message for _, message in service.refusals)
            for analysis_id in ids:
                for product in ("results", "corner"):
                    reply = await api.call("GET", f"/api/obj/analysis/{analysis_id}/{product}")
                    assert reply.status == 404, (product, reply.body)

            upload_id = await register_upload_only(api, group)
            for case, analysis in HOSTILE.items():
                upload = f"/api/obj/{obj_id}/analysis_upload/{upload_id}"
                reply = await api.call("POST", upload, json={"analysis": analysis})
                assert reply.status == 400, (case, reply.body)
                assert reply.message.startswith("Invalid analysis."), (case, reply.message)
            await still_answering(api, deployment)
        finally:
            await api.close()


async def register_upload_only(api: ApiClient, group: int) -> int:
    body = {
        "name": f"upload-{uuid.uuid4().hex[:8]}",
        "display_name": "Uploads",
        "url": "http://127.0.0.1:9/unused",
        "authentication_type": "none",
        "analysis_type": "lightcurve_fitting",
        "input_data_types": [],
        "upload_only": True,
        "group_ids": [group],
    }
    return int((await api.ok("POST", "/api/analysis_service", json=body))["id"])
