"""The deployment files, checked offline: docker-compose.yml against the compose specification
(the JSON schema that check-jsonschema vendors), plus what the specification cannot know —
every tidegate service uses deploy/Dockerfile and runs a real ``tidegate`` command, the worker
can be scaled, migrations run first, Redis and Flower are locked down, and every variable the
compose file interpolates is documented in .env.example.

No Docker engine is needed; nothing is built or started. (``docker compose config`` would be a
further check, but no compose client is installed on our machines or in CI, so no test
pretends to run it.)
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from tidegate.cli import main as tidegate_cli

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
BIN = Path(sys.executable).parent

TIDEGATE_SERVICES = {"migrate", "beat", "worker", "worker-heavy", "flower", "webserver"}
LONG_RUNNING = {"redis", "postgres", "beat", "worker", "worker-heavy", "flower", "s3", "webserver"}
MUST_BE_HEALTHCHECKED = {"redis", "postgres", "s3", "flower", "webserver"}

# $$ is compose's escape for a literal $ (expanded in the container, not by compose).
_VAR = re.compile(
    r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# -- helpers ------------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<: *anchor` merges
    assert isinstance(data, dict)
    return data


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f".env.example line {number}: {line!r}"
        values[name] = value
    return values


def strings(node: Any) -> list[str]:
    """Every string value (not key) in a parsed YAML tree, plus environment keys' values."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return []


def variables_used(text: str) -> set[str]:
    return {m.group("braced") or m.group("bare") for m in _VAR.finditer(text)}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation rules for ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e} and $$."""

    def one(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op") or "", match.group("arg") or ""
        present = name in env
        empty = present and env[name] == ""
        if op in (":-", "-") and (not present or (op == ":-" and empty)):
            return arg
        if op in (":?", "?") and (not present or (op == ":?" and empty)):
            raise AssertionError(f"compose would refuse to start: {name}: {arg}")
        return env.get(name, "")

    return _VAR.sub(one, value).replace("$$", "$")


def services() -> dict[str, dict[str, Any]]:
    result = load_compose()["services"]
    assert isinstance(result, dict)
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    if isinstance(cmd, str):
        return shlex.split(cmd)
    assert isinstance(cmd, list), f"no command: {service}"
    return [str(part) for part in cmd]


def option_value(args: list[str], option: str) -> str:
    assert option in args, f"{option} not in {args}"
    return args[args.index(option) + 1]


def compose_schema() -> dict[str, Any]:
    text = (resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    schema = json.loads(text)
    assert isinstance(schema, dict)
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


# -- the compose specification ------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    assert schema_errors(load_compose()) == []


@pytest.mark.parametrize(
    ("mutation", "where"),
    [
        (lambda d: d["services"]["worker"].update(restrat="always"), "restrat"),
        (lambda d: d["services"]["beat"]["depends_on"]["migrate"].update(condition="service_done"), "condition"),
        (lambda d: d["services"]["redis"]["healthcheck"].update(intervall="5s"), "intervall"),
        (lambda d: d.update(servics={}), "servics"),
    ],
    ids=["misspelled-key", "bad-depends-on-condition", "misspelled-healthcheck-key", "unknown-top-level-key"],
)
def test_schema_validation_rejects_broken_compose_files(mutation: Any, where: str) -> None:
    broken = copy.deepcopy(load_compose())
    mutation(broken)
    errors = schema_errors(broken)
    assert errors, "the schema accepted a broken compose file"
    assert any(where in error for error in errors), errors


def test_check_jsonschema_cli_accepts_the_compose_file() -> None:
    """What CI can run by hand: the vendored schema, no network."""
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- one image, real commands -------------------------------------------------------------------


def test_every_tidegate_service_is_built_from_the_one_dockerfile() -> None:
    built = {name for name, svc in services().items() if "build" in svc}
    assert built == TIDEGATE_SERVICES
    images = set()
    for name in TIDEGATE_SERVICES:
        build = services()[name]["build"]
        assert (ROOT / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name
        images.add(services()[name]["image"])
    assert len(images) == 1, f"tidegate services tag different images: {images}"


def test_third_party_images_are_pinned() -> None:
    for name, svc in services().items():
        if name in TIDEGATE_SERVICES:
            continue
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin a version, not {image!r}"


def _command_path(args: list[str]) -> tuple[list[str], list[str]]:
    """Split ["db", "upgrade", "-x"] into the sub-command path and its arguments."""
    path: list[str] = []
    group: click.Command = tidegate_cli
    for index, token in enumerate(args):
        if not isinstance(group, click.Group):
            return path, args[index:]
        sub = group.get_command(click.Context(group), token)
        assert sub is not None, f"`tidegate {' '.join([*path, token])}`: no such command"
        path.append(token)
        group = sub
    return path, []


@pytest.mark.parametrize("name", sorted(TIDEGATE_SERVICES))
def test_service_command_is_a_real_tidegate_command(name: str) -> None:
    args = command(services()[name])
    path, rest = _command_path(args)
    result = subprocess.run(
        [str(BIN / "tidegate"), *path, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    for token in rest:
        if token.startswith("-"):
            assert re.search(rf"(^|[\s,]){re.escape(token)}\b", result.stdout), (
                f"{name}: `tidegate {path}` has no {token}"
            )
    # and click accepts the arguments as compose will pass them (.env.example values)
    leaf: click.Command = tidegate_cli
    for token in path:
        assert isinstance(leaf, click.Group)
        found = leaf.get_command(click.Context(leaf), token)
        assert found is not None
        leaf = found
    values = env_example()
    leaf.make_context(" ".join(path), [interpolate(arg, values) for arg in rest])


def test_tidegate_environment_variables_are_ones_tidegate_reads() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "tidegate").rglob("*.py"))
    for name in TIDEGATE_SERVICES:
        for var in environment(services()[name]):
            if var.startswith("TIDEGATE_"):
                assert f'"{var}"' in source, f"{name}: tidegate reads no {var} (typo?)"


def test_urls_point_at_the_compose_services_with_the_env_secrets() -> None:
    from sqlalchemy.engine import make_url

    values = env_example()
    for name in TIDEGATE_SERVICES:
        env = {k: interpolate(v, values) for k, v in environment(services()[name]).items()}
        db = make_url(env["TIDEGATE_DATABASE_URL"])
        assert (db.get_backend_name(), db.host) == ("postgresql", "postgres"), name
        assert (db.username, db.password, db.database) == (
            values["POSTGRES_USER"],
            values["POSTGRES_PASSWORD"],
            values["POSTGRES_DB"],
        )
        broker = make_url(env["TIDEGATE_BROKER_URL"])  # same URL grammar
        assert (broker.drivername, broker.host, broker.password) == ("redis", "redis", values["REDIS_PASSWORD"])


def test_the_example_definitions_are_in_the_image_and_load() -> None:
    from tidegate.definitions.loading import CodeLocation

    values = {interpolate(environment(services()[n])["TIDEGATE_DEFINITIONS"], {}) for n in TIDEGATE_SERVICES}
    assert len(values) == 1, f"services load different code: {values}"
    (value,) = values
    copied = [line.split()[1] for line in _instructions("COPY")]
    assert any(value.startswith(src.rstrip("/") + "/") for src in copied), f"{value} is not copied into the image"
    location = CodeLocation.parse(value)
    assert location.file is not None
    defs = CodeLocation(file=str(ROOT / location.file), attribute=location.attribute).load()
    assert "etl_job" in defs.jobs


# -- scaling, ordering, routing -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["worker", "worker-heavy"])
def test_workers_can_be_scaled(name: str) -> None:
    svc = services()[name]
    for key in ("container_name", "ports", "hostname"):
        assert key not in svc, f"{name}: {key} stops `docker compose up --scale {name}=N`"
    assert "deploy" not in svc or "replicas" not in svc["deploy"]


@pytest.mark.parametrize("name", sorted(TIDEGATE_SERVICES - {"migrate"}))
def test_services_start_after_the_migration_and_healthy_services(name: str) -> None:
    depends = services()[name]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["postgres"]["condition"] == "service_healthy"


def test_migrate_runs_db_upgrade_once() -> None:
    migrate = services()["migrate"]
    assert command(migrate) == ["db", "upgrade"]
    assert migrate["restart"] == "no", "a restarting one-shot never completes"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_restart_policies() -> None:
    for name in LONG_RUNNING:
        assert services()[name].get("restart") in ("always", "unless-stopped"), name
    assert set(services()) == LONG_RUNNING | {"migrate"}, "a new service needs a restart policy decision here"


def test_queues_route_to_their_workers() -> None:
    assert option_value(command(services()["worker"]), "-Q") == "tidegate"
    assert option_value(command(services()["worker-heavy"]), "-Q") == "heavy"
    from tidegate.definitions.asset import DEFAULT_QUEUE

    assert DEFAULT_QUEUE == "tidegate"


def test_beat_and_workers_share_tidegate_home() -> None:
    mounts = {}
    for name in ("beat", "worker", "worker-heavy"):
        svc = services()[name]
        env = environment(svc)
        (volume,) = [v for v in svc["volumes"] if v.split(":")[1] == env["TIDEGATE_HOME"]]
        assert env["TIDEGATE_IO_BASE_DIR"].startswith(env["TIDEGATE_HOME"] + "/")
        mounts[name] = volume.split(":")[0]
    assert len(set(mounts.values())) == 1, mounts
    assert next(iter(mounts.values())) in load_compose()["volumes"], "a named volume, shared by every container"


# -- Redis, PostgreSQL, Flower ------------------------------------------------------------------


def test_redis_requires_the_password_from_env_and_never_evicts() -> None:
    redis = services()["redis"]
    args = command(redis)
    assert args[0] == "redis-server"
    password = option_value(args, "--requirepass")
    assert variables_used(password) == {"REDIS_PASSWORD"}
    assert ":?" in password, "an unset password must stop compose, not start Redis without one"
    assert option_value(args, "--maxmemory-policy") == "noeviction"
    assert "ports" not in redis, "Redis is reachable from the compose network only"
    assert environment(redis)["REDISCLI_AUTH"] == password  # the healthcheck authenticates
    for name in TIDEGATE_SERVICES:
        assert "REDIS_PASSWORD" in variables_used(environment(services()[name])["TIDEGATE_BROKER_URL"])


def test_postgres_keeps_its_data_in_a_volume_and_is_not_published() -> None:
    postgres = services()["postgres"]
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in postgres["volumes"])
    assert "ports" not in postgres
    assert variables_used(environment(postgres)["POSTGRES_PASSWORD"]) == {"POSTGRES_PASSWORD"}


def test_flower_has_basic_auth_from_env_and_persistent_state() -> None:
    flower = services()["flower"]
    env = environment(flower)
    auth = env["TIDEGATE_FLOWER_BASIC_AUTH"]
    assert variables_used(auth) == {"FLOWER_BASIC_AUTH"} and ":?" in auth
    user, sep, password = env_example()["FLOWER_BASIC_AUTH"].partition(":")
    assert user and sep and password
    args = command(flower)
    assert "--persistent" in args
    state_dir = str(Path(option_value(args, "--db")).parent)
    assert any(v.split(":")[1] == state_dir and v.split(":")[0] in load_compose()["volumes"] for v in flower["volumes"])
    (port,) = flower["ports"]
    assert port.startswith("127.0.0.1:"), "Flower is published on loopback only"
    assert port.rsplit(":", 1)[1] == env["TIDEGATE_FLOWER_PORT"]


@pytest.mark.parametrize("name", sorted(MUST_BE_HEALTHCHECKED))
def test_healthchecks(name: str) -> None:
    check = services()[name]["healthcheck"]
    assert not check.get("disable", False)
    test = check["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


def test_flower_healthcheck_hits_the_published_port() -> None:
    flower = services()["flower"]
    port = environment(flower)["TIDEGATE_FLOWER_PORT"]
    assert f"127.0.0.1:{port}/healthcheck" in " ".join(flower["healthcheck"]["test"])


# -- .env.example -------------------------------------------------------------------------------


def test_every_interpolated_variable_is_in_env_example_and_no_more() -> None:
    used = {v for s in strings(load_compose()) for v in variables_used(s)}
    documented = set(env_example())
    assert used - documented == set(), "used by docker-compose.yml, missing from .env.example"
    assert documented - used == set(), "in .env.example, used nowhere"


def test_env_example_interpolates_every_required_variable() -> None:
    values = env_example()
    for s in strings(load_compose()):
        interpolate(s, values)  # raises on a ${VAR:?...} left unset
    with pytest.raises(AssertionError, match="REDIS_PASSWORD"):
        interpolate(option_value(command(services()["redis"]), "--requirepass"), {})


# -- the Dockerfile -----------------------------------------------------------------------------


def _instructions(keyword: str) -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip().upper().startswith(keyword + " ")]


def test_dockerfile_installs_tidegate_with_the_service_extras() -> None:
    installs = [line for line in _instructions("RUN") if "pip install" in line]
    extras = set()
    for line in installs:
        for match in re.finditer(r"\.\[([a-z0-9_,]+)\]", line):
            extras |= set(match.group(1).split(","))
    assert {"postgres", "s3", "flower"} <= extras, installs
    assert not any(" -e " in line for line in installs), "an editable install needs the source tree at run time"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = _instructions("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split()[1]
    assert user not in ("root", "0", "0:0")
    assert any("useradd" in line and user in line for line in _instructions("RUN"))


def test_dockerfile_entrypoint_is_tidegate() -> None:
    (entrypoint,) = _instructions("ENTRYPOINT")
    assert json.loads(entrypoint.split(None, 1)[1]) == ["tidegate"]


def test_dockerfile_copies_only_what_exists_and_the_ignore_file_lets_through() -> None:
    ignore = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "**", "start from an empty context, then let sources in"
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    for line in _instructions("COPY"):
        *sources, _dest = line.split()[1:]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the build context"
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by {DOCKERIGNORE.name}"


def test_the_webserver_is_published_on_loopback_and_checks_readiness() -> None:
    webserver = services()["webserver"]
    args = command(webserver)
    (port,) = webserver["ports"]
    assert port.startswith("127.0.0.1:") and port.rsplit(":", 1)[1] == option_value(args, "--port")
    assert "--insecure" not in args, "the published webserver must require API tokens"
    assert f"127.0.0.1:{option_value(args, '--port')}/readyz" in " ".join(webserver["healthcheck"]["test"])
