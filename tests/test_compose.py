"""The docker-compose stack, checked statically (no Docker engine needed).

The file is parsed with ``yaml.safe_load`` (anchors and ``<<`` merges resolved, comments
dropped) and compared with the code: the workers' ``-Q`` lists must cover every step queue the
topology registers, never a dead-letter queue, and no credential may be written in the file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"

INFRA_SERVICES = {"rabbitmq", "redis", "nats"}
APP_SERVICES = {"worker-escavadores", "worker-executadores", "flower"}
WORKER_KINDS = {"worker-escavadores": "escavador", "worker-executadores": "executador"}
QUEUE_RE = re.compile(r"^(escavador|executador)_[a-z0-9][a-z0-9_\-]*$")
INTERPOLATION_RE = re.compile(r"\$\{[^}]*\}")
SECRET_KEY_RE = re.compile(r"pass(word)?|secret|token|basic_auth", re.IGNORECASE)
# user:password@host inside a URL; the password part must be an interpolation.
URL_CREDENTIALS_RE = re.compile(r"[a-z][a-z0-9+.\-]*://[^/\s:@]*:([^@\s]+)@", re.IGNORECASE)
LITERAL_PASSWORD_RE = re.compile(r"(pass(word)?|secret)\w*['\"]?\s*[:=]\s*[^\s$'\"]", re.I)


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = compose.get("services")
    assert isinstance(result, dict), "docker-compose.yml has no services"
    return result


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whether written as a mapping or a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert command, "service has no command"
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _queues(argv: list[str]) -> list[str]:
    """The queues of a ``celery worker`` command line (-Q a,b / -Qa,b / --queues[=]a,b)."""
    queues: list[str] = []
    for index, arg in enumerate(argv):
        value: str | None = None
        if arg in ("-Q", "--queues"):
            value = argv[index + 1] if index + 1 < len(argv) else ""
        elif arg.startswith("--queues="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-Q") and len(arg) > 2:
            value = arg[2:]
        if value is not None:
            queues.extend(q.strip() for q in value.split(",") if q.strip())
    return queues


def _strings(node: Any) -> list[str]:
    """Every string (keys and values) in a parsed YAML tree."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _worker_services(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    workers = {
        name: _command(service)
        for name, service in services.items()
        if name in APP_SERVICES and "worker" in _command(service)
    }
    assert set(workers) == set(WORKER_KINDS), f"worker services: {sorted(workers)}"
    return workers


@pytest.fixture(scope="module")
def registered_queues() -> set[str]:
    """The step queues ``import orchestrator`` registers in the containers' configuration.

    Read in a fresh interpreter: the test session's conftest adds test-only step modules
    (ORCHESTRATOR_STEP_MODULES) that no compose worker should consume, while the containers
    run with the default step modules, as the compose file sets no ORCHESTRATOR_STEP_MODULES.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    # orchestrator.app is what `celery -A orchestrator` loads; loading it imports the steps.
    script = (
        "import json, orchestrator; orchestrator.app; "
        "from orchestrator.topology import topology; print(json.dumps(topology.names()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"import orchestrator failed:\n{done.stderr}"
    names = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(names, list)
    return {str(name) for name in names}


def test_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "compose spec: the top-level version key is obsolete"


def test_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = (INFRA_SERVICES | APP_SERVICES) - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_infrastructure_images(services: dict[str, dict[str, Any]]) -> None:
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["redis"]["image"] == "redis:7-alpine"
    assert services["nats"]["image"].startswith("nats:2.10")
    assert "--appendonly" in _command(services["redis"])
    nats_argv = _command(services["nats"])
    assert "-js" in nats_argv and "-sd" in nats_argv and "-m" in nats_argv
    for name in INFRA_SERVICES:
        assert services[name].get("volumes"), f"{name} keeps no data in a volume"


def test_app_services_run_celery_from_the_image(services: dict[str, dict[str, Any]]) -> None:
    for name in sorted(APP_SERVICES):
        service = services[name]
        assert service.get("build"), f"{name} is not built from the Dockerfile"
        argv = _command(service)
        assert argv[:3] == ["celery", "-A", "orchestrator"], f"{name}: {argv}"
    assert _command(services["flower"])[3] == "flower"


def test_app_services_share_broker_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in sorted(APP_SERVICES):
        env = _environment(services[name])
        broker = env.get("ORCHESTRATOR_BROKER_URL", "")
        assert broker.startswith("amqp://") and "@rabbitmq:5672/" in broker, f"{name}: {broker}"
        assert "${RABBITMQ_PASSWORD" in broker, f"{name}: the broker password is not from env"
        assert env.get("ORCHESTRATOR_RESULT_BACKEND") == "redis://redis:6379/0", name


def test_executadores_keep_data_in_a_volume(services: dict[str, dict[str, Any]]) -> None:
    service = services["worker-executadores"]
    assert _environment(service).get("ORCHESTRATOR_DATA_DIR") == "/app/data"
    targets = [str(v).split(":")[1] if ":" in str(v) else str(v) for v in service["volumes"]]
    assert "/app/data" in targets, service["volumes"]


def test_worker_queues_follow_the_naming_contract(services: dict[str, dict[str, Any]]) -> None:
    for name, argv in _worker_services(services).items():
        queues = _queues(argv)
        assert queues, f"{name} has no -Q: it would consume every queue"
        kind = WORKER_KINDS[name]
        for queue in queues:
            assert QUEUE_RE.match(queue), f"{name}: {queue!r} is not escavador_/executador_<x>"
            assert queue.startswith(kind + "_"), f"{name} consumes {queue!r}, not a {kind}"


def test_no_worker_consumes_a_dead_letter_queue(services: dict[str, dict[str, Any]]) -> None:
    for name, argv in _worker_services(services).items():
        dead = [q for q in _queues(argv) if ".dlq" in q]
        assert not dead, f"{name} consumes dead-letter queues: {dead}"


def test_registered_step_queues_follow_the_naming_contract(registered_queues: set[str]) -> None:
    for queue in sorted(registered_queues):
        assert QUEUE_RE.match(queue), f"registered queue {queue!r} breaks the naming contract"


def test_workers_cover_every_registered_step_queue(
    services: dict[str, dict[str, Any]], registered_queues: set[str]
) -> None:
    # The steps may still be partly written: cover whatever the topology registers now.
    consumed = {q for argv in _worker_services(services).values() for q in _queues(argv)}
    uncovered = registered_queues - consumed
    assert not uncovered, f"no compose worker consumes {sorted(uncovered)}; add them to a -Q"


def test_worker_node_names_and_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, argv in _worker_services(services).items():
        assert "-n" in argv, f"{name} has no -n node name"
        node = argv[argv.index("-n") + 1]
        assert node.endswith("@%h"), f"{name}: node name {node!r}"
        test = services[name]["healthcheck"]["test"]
        command = test[1] if test[0] == "CMD-SHELL" else " ".join(test[1:])
        assert "inspect ping" in command, f"{name}: healthcheck {command!r}"
        # $$ so compose leaves $HOSTNAME to the container's shell.
        assert f"-d {node.split('@')[0]}@$$HOSTNAME" in command, f"{name}: {command!r}"


def test_depends_on_waits_for_healthy_services(services: dict[str, dict[str, Any]]) -> None:
    for name in sorted(APP_SERVICES):
        depends = services[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must use the long form"
        assert {"rabbitmq", "redis"} <= set(depends), f"{name}: {depends}"
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must use the long form"
        for other, condition in depends.items():
            assert other in services, f"{name} depends on unknown {other!r}"
            assert condition.get("condition") == "service_healthy", f"{name} -> {other}"


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        health = service.get("healthcheck")
        assert health and not health.get("disable"), f"{name} has no healthcheck"
        test = health.get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck {test!r}"


def test_flower_basic_auth_comes_from_env(
    services: dict[str, dict[str, Any]], compose_text: str
) -> None:
    env = _environment(services["flower"])
    auth = env.get("FLOWER_BASIC_AUTH", "")
    assert "${" in auth, "FLOWER_BASIC_AUTH must be interpolated from the environment"
    assert INTERPOLATION_RE.sub("", auth) in ("", ":"), f"literal text in {auth!r}"
    # Flower turns every FLOWER_* variable into an option and stops at an unknown one.
    assert {k for k in env if k.startswith("FLOWER_")} == {"FLOWER_BASIC_AUTH"}
    assert "celery -A orchestrator flower" in compose_text


def test_the_console_runs_from_the_image_behind_a_password_from_env(
    services: dict[str, dict[str, Any]]
) -> None:
    service = services["console"]
    assert service.get("build"), "the console is not built from the Dockerfile"
    argv = _command(service)
    assert argv[:2] == ["orchestrator", "console"], argv
    assert "--address=0.0.0.0" in argv, "inside its container it listens on every interface"
    env = _environment(service)
    assert env.get("ORCHESTRATOR_BROKER_URL") == _environment(
        services["flower"]).get("ORCHESTRATOR_BROKER_URL"), "the same broker as the workers"
    assert env.get("ORCHESTRATOR_RESULT_BACKEND") == "redis://redis:6379/0"
    assert env.get("ORCHESTRATOR_CONSOLE_PASSWORD") == "${CONSOLE_PASSWORD:?set CONSOLE_PASSWORD}"
    assert env.get("ORCHESTRATOR_CONSOLE_USER", "").startswith("${CONSOLE_USER:?")
    assert {"rabbitmq", "redis"} <= set(service["depends_on"])
    assert [str(port) for port in service["ports"]] == ["127.0.0.1:8080:8080"], (
        "it can replay and purge: published on the loopback interface only")
    assert "/healthcheck" in " ".join(service["healthcheck"]["test"])


def test_no_literal_credentials(compose: dict[str, Any], compose_text: str) -> None:
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if not SECRET_KEY_RE.search(key):
                continue
            assert "${" in value, f"{name}: {key} is written in the file"
            assert not INTERPOLATION_RE.sub("", value).strip(":"), f"{name}: {key}={value!r}"
            for var in re.findall(r"\$\{([A-Z0-9_]*PASS[A-Z0-9_]*)(:?-)", value):
                pytest.fail(f"{name}: {key} gives {var[0]} a default password")
    for text in (*_strings(compose), *compose_text.splitlines()):
        stripped = INTERPOLATION_RE.sub("", text)
        assert not LITERAL_PASSWORD_RE.search(stripped), f"literal password in {text!r}"
        for password in URL_CREDENTIALS_RE.findall(text):
            assert password.startswith("${"), f"URL with a literal password: {text!r}"


def test_env_example_lists_every_required_variable(compose: dict[str, Any]) -> None:
    # From the parsed file, so the examples in its comments do not count.
    required = {
        var for text in _strings(compose) for var in re.findall(r"\$\{([A-Z0-9_]+):\?", text)
    }
    assert {"RABBITMQ_PASSWORD", "FLOWER_USER", "FLOWER_PASSWORD", "CONSOLE_USER",
            "CONSOLE_PASSWORD"} <= required
    listed = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    missing = (required | {"RABBITMQ_USER"}) - listed
    assert not missing, f".env.example does not list {sorted(missing)}"


def test_readme_documents_the_stack() -> None:
    if not README.exists():
        pytest.skip("README.md is not written yet")
    text = README.read_text(encoding="utf-8")
    assert "docker compose up" in text, "README does not say how to start the stack"
    assert "celery -A orchestrator flower" in text, "README does not say how to start Flower"


MONITORING_SERVICES = {"metrics", "prometheus", "grafana"}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a service: container path -> host path (named volumes left out)."""
    found: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        if source.startswith((".", "/")):
            found[rest.split(":")[0]] = source
    return found


def test_monitoring_services_and_their_files(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= MONITORING_SERVICES, sorted(MONITORING_SERVICES - set(services))
    metrics = _command(services["metrics"])
    assert metrics[:2] == ["orchestrator", "metrics"], metrics
    assert metrics[metrics.index("--address") + 1] == "0.0.0.0", "unreachable from prometheus"
    port = metrics[metrics.index("--port") + 1]
    assert services["metrics"].get("build"), "the exporter runs from the project's image"
    config_path = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]
    assert f"metrics:{port}" in targets, targets

    prometheus = _mounts(services["prometheus"])
    grafana = _mounts(services["grafana"])
    for mounts in (prometheus, grafana):
        for target, source in mounts.items():
            assert (ROOT / source).exists(), f"{source} (mounted at {target}) does not exist"
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    # The rule file Prometheus loads is the one mounted from the repository.
    for rule_file in config["rule_files"]:
        assert rule_file in prometheus, f"rule file {rule_file} is not mounted"
        assert prometheus[rule_file] == "./deploy/prometheus/alerts.yml"
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    dashboards = ROOT / grafana["/var/lib/grafana/dashboards"]
    assert (dashboards / "orchestrator.json").exists()
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/orchestrator.yml")
                              .read_text(encoding="utf-8"))
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")
                                .read_text(encoding="utf-8"))["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    used = {target["datasource"]["uid"] for panel in
            json.loads((dashboards / "orchestrator.json").read_text())["panels"]
            for target in panel["targets"]}
    assert used == {datasource["uid"]}, "the dashboard's panels use another data source"


def test_grafana_admin_password_comes_from_env(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["grafana"])
    password = env.get("GF_SECURITY_ADMIN_PASSWORD", "")
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?"), f"not required from env: {password}"
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "false"
