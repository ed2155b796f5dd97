"""Demo data for ``skyhook run --demo``, loaded through the public API like any client would.

It creates (once) a ``demo`` group, a ZTF instrument, a source with a simulated SN Ia light
curve, a redshift, comments and a classification, and registers the SN fitter and the LLM
summarizer. Every run issues a fresh admin token, written to ``var/demo-token``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from shared.domain.accounts import ensure_user, get_or_create_group, issue_token
from shared.domain.enums import ACL
from shared.runtime.resources import Resources

DEMO_SOURCE_ID = "ZTF24demo001"
DEMO_GROUP = "demo"
DEMO_USER = "demo"
SN_FITTER_NAME = "sn_fitter"
DEMO_COMMENTS = (
    "Rising fast in both ZTF bands; colour near zero at discovery.",
    "Host is a spiral galaxy at z~0.05; spectrum requested.",
    "Classification spectrum shows Si II 6355: looks like a normal SN Ia near peak.",
)


@dataclass(frozen=True)
class DemoInfo:
    token: str
    source_id: str
    sn_fitter_id: int
    summarizer_id: int
    token_file: Path


class DemoClient:
    """A few API calls with the demo token; any non-success answer stops the demo loudly."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base_url + path, json=body) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, reply = await self.call(method, path, body)
        if status != 200:
            raise RuntimeError(f"demo: {method} {path} answered {status}: {reply.get('message')}")
        return reply["data"]


async def _demo_token(resources: Resources) -> tuple[str, int]:
    async with resources.sessions.begin() as session:
        user = await ensure_user(
            session,
            DEMO_USER,
            admin=True,
            acls=[ACL.MANAGE_ANALYSIS_SERVICES, ACL.RUN_ANALYSES, ACL.UPLOAD_DATA],
            groups=[DEMO_GROUP],
        )
        _, secret = await issue_token(session, user, "demo")
        group = await get_or_create_group(session, DEMO_GROUP)
        return secret, group.id


async def _instrument_id(client: DemoClient) -> int:
    for instrument in await client.ok("GET", "/api/instrument"):
        if instrument["name"] == "ZTF":
            return int(instrument["id"])
    body = {"name": "ZTF", "telescope": "P48", "filters": ["ztfg", "ztfr", "ztfi"]}
    return int((await client.ok("POST", "/api/instrument", body))["id"])


async def _ensure_source(client: DemoClient, group_id: int) -> None:
    from sn_fitter.demo import demo_lightcurve

    status, _ = await client.call("GET", f"/api/sources/{DEMO_SOURCE_ID}")
    if status == 200:
        return
    curve = demo_lightcurve()
    await client.ok(
        "POST",
        "/api/sources",
        {
            "id": DEMO_SOURCE_ID,
            "ra": 187.70593,
            "dec": 12.39112,
            "redshift": round(curve.redshift, 5),
            "redshift_error": 0.001,
            "group_ids": [group_id],
        },
    )
    photometry = {
        "obj_id": DEMO_SOURCE_ID,
        "instrument_id": await _instrument_id(client),
        "origin": "demo simulation",
        "group_ids": [group_id],
        **curve.columnar(),
    }
    await client.ok("POST", "/api/photometry", photometry)
    for text in DEMO_COMMENTS:
        await client.ok("POST", f"/api/sources/{DEMO_SOURCE_ID}/comments", {"text": text})
    await client.ok(
        "POST",
        "/api/classification",
        {"obj_id": DEMO_SOURCE_ID, "classification": "Ia", "probability": 0.93},
    )


async def _ensure_service(client: DemoClient, body: dict[str, Any]) -> int:
    for service in await client.ok("GET", "/api/analysis_service"):
        if service["name"] == body["name"]:
            return int(service["id"])
    return int((await client.ok("POST", "/api/analysis_service", body))["id"])


def sn_fitter_registration(url: str, group_ids: list[int]) -> dict[str, Any]:
    from sn_fitter import OPTIONAL_ANALYSIS_PARAMETERS

    return {
        "name": SN_FITTER_NAME,
        "display_name": "SN light-curve fit (sncosmo, MCMC)",
        "description": "Fits an sncosmo model (default SALT3) and samples its posterior.",
        "version": "1.0",
        "url": url,
        "authentication_type": "none",
        "analysis_type": "lightcurve_fitting",
        "input_data_types": ["photometry", "redshift"],
        "optional_analysis_parameters": json.dumps(OPTIONAL_ANALYSIS_PARAMETERS),
        "timeout": 900.0,
        "group_ids": group_ids,
    }


async def load_demo(
    resources: Resources, base_url: str, *, sn_fitter_url: str, summarizer_url: str
) -> DemoInfo:
    from llm_summarizer.demo import summarizer_registration

    token, group_id = await _demo_token(resources)
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        client = DemoClient(session, base_url)
        await _ensure_source(client, group_id)
        fitter_id = await _ensure_service(client, sn_fitter_registration(sn_fitter_url, [group_id]))
        summarizer_id = await _ensure_service(
            client, summarizer_registration(summarizer_url, [group_id])
        )
    token_file = (Path("var") / "demo-token").resolve()
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return DemoInfo(token, DEMO_SOURCE_ID, fitter_id, summarizer_id, token_file)


# Reads the id out of a start's answer ({"status": "success", "data": {"id": N}}).
READ_ID = """python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])'"""


FIT_BODY = '{"analysis_parameters": {"source": "salt3", "fix_z": "False"}, "show_plots": true}'


def welcome(info: DemoInfo, base_url: str) -> str:
    """The walkthrough: commands that work from any directory, with this run's ids."""
    api = f"{base_url}/api"
    source, fitter, summarizer = info.source_id, info.sn_fitter_id, info.summarizer_id
    return f"""
skyhook demo is running at {base_url}; a demo admin token is in {info.token_file}:

  H="Authorization: token $(cat {info.token_file})"
  # the demo source: a simulated SN Ia with ZTF photometry
  curl -s -H "$H" {api}/sources/{source}
  # fit its light curve with the SN fitter (service {fitter}); answers {{"data": {{"id": …}}}}
  ID=$(curl -s -X POST -H "$H" {api}/obj/{source}/analysis/{fitter} \\
       -d '{FIT_BODY}' | {READ_ID})
  # watch it: queued -> dispatching -> pending -> completed (a few seconds)
  curl -s -H "$H" {api}/obj/analysis/$ID
  curl -s -H "$H" {api}/obj/analysis/$ID/plots/0 -o lightcurve.png
  curl -s -H "$H" {api}/obj/analysis/$ID/corner -o corner.png
  curl -s -H "$H" {api}/obj/analysis/$ID/results
  # an LLM summary of its comments (service {summarizer}; needs SKYHOOK_LLM_API_KEY)
  curl -s -X POST -H "$H" {api}/obj/{source}/analysis/{summarizer}
"""
