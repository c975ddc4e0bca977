"""compose.yaml: the compose spec's schema, then what the schema cannot see.

`check-jsonschema --builtin-schema vendor.compose-spec` validates the file
offline but not references between services, volumes and files; the old
`docker-compose` v1 would check those but rejects newer spec keys. So the
references are checked here by hand, with PyYAML.

env_file decision: the workers' `env_file` is `.env` at the repository root
and is *required* (compose refuses to start without it), because a cloud
worker without its API keys would fail every job. `.env` holds secrets and is
never in the repository, so the test accepts that one missing path when its
template `deploy/.env.example` exists and `.env` is kept out of git and out
of the Docker build context. Any other env_file path must exist.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import pytest

from promptq.tasks.settings import Settings

from .helpers import (
    BUILTIN_PROVIDERS,
    COMPOSE,
    ENV_EXAMPLE,
    REPO,
    SECRET_NAME,
    SERVER_CONFIG,
    SERVER_ENV,
    command_tokens,
    compose,
    dockerignore_excludes,
    env_files,
    environment,
    healthcheck_command,
    hide_refs,
    is_promptq_service,
    iter_strings,
    option_value,
    parse_duration_s,
    published_ports,
    services,
    split_url_with_refs,
    volume_mounts,
    worker_services,
)

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
CORE_SERVICES = ("redis", "worker-cloud", "worker-local", "serve", "flower")

# A compose variable reference with no default: ${VAR}, ${VAR:?msg}, ${VAR?msg}.
REF_NO_DEFAULT = r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}"
# A variable the container's shell expands at run time ($$VAR in compose).
CONTAINER_REF = r"\$\$\{?[A-Za-z_][A-Za-z0-9_]*\}?"
# Shapes of real credentials, for strings under any name.
KEY_SHAPES = [
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),  # OpenAI, Anthropic (sk-ant-), OpenRouter (sk-or-)
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"(?<![A-Za-z0-9:$])[A-Fa-f0-9]{32,}\b"),  # long hex (a generated password)
]


def _settings_env_names():
    return {"PROMPTQ_" + f.name.upper() for f in dataclasses.fields(Settings)} | {"PROMPTQ_CONFIG"} | set(SERVER_ENV)


def test_server_env_names_are_the_ones_serve_reads():
    # SERVER_ENV widens the known PROMPTQ_* names: each must really be read.
    source = SERVER_CONFIG.read_text(encoding="utf-8")
    for name in SERVER_ENV:
        assert f'"{name}"' in source, f"{name} is not read by workers/server/config.py"


# --- (a) the compose spec ----------------------------------------------------


def test_compose_validates_against_the_compose_spec():
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"compose.yaml fails the compose spec:\n{proc.stdout}\n{proc.stderr}"


def test_no_obsolete_version_key():
    # Compose v2 ignores `version:` and warns that it is obsolete.
    assert "version" not in compose()


# --- (b) references the schema does not check ----------------------------------


def test_core_services_exist():
    missing = set(CORE_SERVICES) - set(services())
    assert not missing, f"compose.yaml lacks services {sorted(missing)}"


def test_depends_on_names_existing_services_with_healthchecks_where_awaited():
    svcs = services()
    for name, svc in svcs.items():
        deps = svc.get("depends_on") or []
        items = deps.items() if isinstance(deps, dict) else [(d, {}) for d in deps]
        for dep, spec in items:
            assert dep in svcs, f"{name} depends on {dep!r}, which is not a service"
            assert dep != name, f"{name} depends on itself"
            if (spec or {}).get("condition") == "service_healthy":
                # Otherwise compose waits forever for a health status that never comes.
                assert "healthcheck" in svcs[dep], f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
            # A service outside every profile must not depend on a profiled one:
            # a plain `docker compose up` would then fail.
            if not svc.get("profiles") and svcs[dep].get("profiles"):
                assert (spec or {}).get("required") is False, f"{name} (always on) depends on profiled {dep}"


def test_named_volumes_are_declared_and_used_and_bind_sources_exist():
    declared = set((compose().get("volumes") or {}).keys())
    used = set()
    for name, svc in services().items():
        for kind, source, target in volume_mounts(svc):
            assert target.startswith("/"), f"{name}: volume target {target!r} is not absolute"
            if kind == "volume" and source:
                used.add(source)
                assert source in declared, f"{name} mounts volume {source!r}, not declared under top-level volumes"
            elif kind == "bind":
                assert (REPO / source).exists(), f"{name} bind-mounts {source}, which does not exist in the repo"
    assert not declared - used, f"declared but unused volumes: {sorted(declared - used)}"


def test_build_context_and_dockerfile_exist():
    built = 0
    for name, svc in services().items():
        build = svc.get("build")
        if build is None:
            continue
        built += 1
        if isinstance(build, str):
            build = {"context": build}
        context = REPO / build.get("context", ".")
        assert context.is_dir(), f"{name}: build context {context} is not a directory"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} does not exist"
    assert built, "no service builds the promptq image"


def test_env_files_exist_or_are_the_local_secrets_file():
    seen_dotenv = False
    for name, svc in services().items():
        for path, required in env_files(svc):
            if (REPO / path).is_file() or not required:
                continue
            # The one allowed missing path: the operator's own .env (see module docstring).
            assert path in (".env", "./.env"), f"{name}: env_file {path} does not exist"
            seen_dotenv = True
    if seen_dotenv:
        assert ENV_EXAMPLE.is_file(), ".env is required but its template deploy/.env.example is missing"
        assert dockerignore_excludes(".env"), ".env would be sent into the Docker build context"
        ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO)
        assert ignored.returncode == 0, ".env (API keys, passwords) is not git-ignored: add it to .gitignore"


def test_redis_is_not_published_and_nothing_listens_beyond_loopback():
    assert not services()["redis"].get("ports"), "Redis must be reachable on the compose network only"
    for name, svc in services().items():
        for host_ip, published, target in published_ports(svc):
            assert host_ip in LOOPBACK, f"{name} publishes {target} on all interfaces; bind it to 127.0.0.1"


def test_flower_is_published_on_loopback_only_and_requires_basic_auth():
    flower = services()["flower"]
    ports = published_ports(flower)
    assert ports, "flower publishes no port"
    assert {p[2] for p in ports} == {"5555"}
    assert all(host == "127.0.0.1" for host, _, _ in ports), ports
    assert command_tokens(flower)[:1] == ["flower"]
    auth = environment(flower).get("FLOWER_BASIC_AUTH") or ""
    # `:?` makes compose refuse to start Flower without credentials.
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]*\}", auth), f"FLOWER_BASIC_AUTH must be required, got {auth!r}"
    # Flower needs the broker, not the providers' API keys.
    assert not env_files(flower), "flower should not load .env (it holds every provider key)"
    assert not [k for k in environment(flower) if k.endswith("_API_KEY")]
    assert "/healthcheck" in " ".join(healthcheck_command(flower)), "flower's healthcheck should use the open /healthcheck"


def test_serve_is_published_on_loopback_only_and_requires_client_keys():
    serve = services()["serve"]
    assert command_tokens(serve)[:1] == ["serve"]
    ports = published_ports(serve)
    assert ports and all(host == "127.0.0.1" for host, _, _ in ports), ports
    # Bound beyond loopback, serve refuses to start without keys: `:?` makes
    # compose say so up front instead of a container in a restart loop.
    keys = environment(serve).get("PROMPTQ_API_KEYS") or ""
    assert re.fullmatch(r"\$\{PROMPTQ_API_KEYS:\?[^}]*\}", keys), f"PROMPTQ_API_KEYS must be required, got {keys!r}"
    # The front needs the broker and its clients' keys, not the providers' keys.
    assert not env_files(serve), "serve should not load .env (it holds every provider key)"
    assert not [k for k in environment(serve) if k.endswith("_API_KEY")]
    # Its files outlive the container.
    files_dir = environment(serve).get("PROMPTQ_FILES_DIR")
    assert any(kind == "volume" and target == files_dir for kind, _, target in volume_mounts(serve)), files_dir
    # The image carries the `server` extra, without which `promptq serve` exits at once.
    build = serve.get("build") or {}
    extras = str((build.get("args") or {}).get("EXTRAS", ""))
    assert "server" in extras.split(","), f"serve's image is built without the server extra (EXTRAS={extras!r})"


def test_serve_healthcheck_asks_the_open_health_route():
    from starlette.testclient import TestClient

    from promptq.workers.server.app import create_app
    from promptq.workers.server.config import ServerConfig, digest

    check = " ".join(healthcheck_command(services()["serve"]))
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)['\"]", check)
    assert url, f"serve's healthcheck makes no HTTP request: {check}"
    port = {target for _, _, target in published_ports(services()["serve"])}
    assert port == {url.group(1)}, f"serve's healthcheck asks port {url.group(1)}, it publishes {port}"
    # The route answers 200 without a key while keys are required (a 401 would
    # mark a healthy front unhealthy); the app is built without Redis.
    app = create_app(ServerConfig(key_digests=frozenset({digest("k" * 32)})), Settings(), client=object())
    assert TestClient(app).get(url.group(2)).status_code == 200
    assert TestClient(app).get("/v1/models").status_code == 401  # ... and the check itself can fail


def test_redis_has_password_persistence_and_healthcheck():
    redis = services()["redis"]
    tokens = command_tokens(redis)
    password = option_value(tokens, "--requirepass")
    assert password and re.fullmatch(r"\$\{REDIS_PASSWORD:\?[^}]*\}", password), f"--requirepass must be ${{REDIS_PASSWORD:?...}}, got {password!r}"
    assert option_value(tokens, "--appendonly") == "yes", "Redis must persist the queue (--appendonly yes)"
    policy = option_value(tokens, "--maxmemory-policy")
    assert policy in (None, "noeviction"), "an evicting Redis drops queued jobs"
    assert any(target == "/data" and kind == "volume" for kind, _, target in volume_mounts(redis)), "Redis /data must be a named volume"
    check = " ".join(healthcheck_command(redis))
    assert "redis-cli" in check and "ping" in check, check
    assert "-a" in healthcheck_command(redis) or "REDISCLI_AUTH" in environment(redis), "the healthcheck must authenticate"


def test_workers_use_the_compose_redis_with_its_password():
    redis_svc = services()["redis"]
    for name, svc in worker_services().items():
        env = environment(svc)
        url = env.get("PROMPTQ_REDIS_URL")
        assert url, f"{name} has no PROMPTQ_REDIS_URL"
        parts, refs = split_url_with_refs(url)
        assert parts.scheme in ("redis", "rediss")
        assert parts.hostname == "redis" and "redis" in services(), f"{name} points at {parts.hostname}, not the redis service"
        assert parts.port in (None, 6379)
        password = refs.get(parts.password or "", parts.password or "")
        assert re.fullmatch(r"\$\{REDIS_PASSWORD(?::\?[^}]*)?\}", password), f"{name}: the URL's password must be ${{REDIS_PASSWORD}}, is {password!r}"
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict) and deps.get("redis", {}).get("condition") == "service_healthy", f"{name} must wait for a healthy redis"
    assert redis_svc  # the URL's host is a real service (checked above)


def test_workers_are_resilient():
    for name, svc in worker_services().items():
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name} has no restart policy"
        assert "healthcheck" in svc, f"{name} has no healthcheck"
        grace = parse_duration_s(svc.get("stop_grace_period", "10s"))
        # Compose's default 10s SIGKILLs a worker mid-call; the job then runs
        # (and is paid for) again. A minute is the floor for an LLM call.
        assert grace >= 60, f"{name}: stop_grace_period {grace}s is too short for in-flight LLM calls"
        port = environment(svc).get("PROMPTQ_METRICS_PORT")
        assert port and int(port) > 0, f"{name} exposes no Prometheus metrics"


def test_every_provider_queue_has_a_worker():
    consumed = set()
    for name, svc in worker_services().items():
        value = option_value(command_tokens(svc), "--providers")
        assert value, f"{name} runs `promptq worker` without --providers"
        consumed |= set(value.split(","))
    missing = set(BUILTIN_PROVIDERS) - consumed
    assert not missing, f"no compose worker consumes the queues of {sorted(missing)}"


def test_promptq_env_vars_in_compose_are_real_settings():
    known = _settings_env_names()
    for name, svc in services().items():
        for key in environment(svc):
            if key.startswith("PROMPTQ_"):
                assert key in known, f"{name} sets {key}, which is no setting in tasks/settings.py (typo?)"


def test_profiled_services_use_no_required_variables():
    # Compose interpolates every service before filtering by profile, so a
    # `${VAR:?}` in an optional service breaks a plain `docker compose up`.
    for name, svc in services().items():
        if not svc.get("profiles"):
            continue
        for where, text in iter_strings(svc, name):
            assert not re.search(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?", text), f"{where}: required variable in profiled service"


# --- no literal secrets ---------------------------------------------------------


def _check_no_literal_secret(where: str, key: str, value: str) -> None:
    if SECRET_NAME.search(key) and value:
        assert re.fullmatch(REF_NO_DEFAULT, value), f"{where}: {key} must be a ${{VAR}} reference without a default, not a literal"


def test_no_literal_secrets():
    doc = compose()
    for name, svc in services().items():
        for key, value in environment(svc).items():
            _check_no_literal_secret(f"services.{name}.environment", key, value or "")
        tokens = command_tokens(svc)
        if "--requirepass" in tokens:
            _check_no_literal_secret(f"services.{name}.command", "PASSWORD", option_value(tokens, "--requirepass") or "")
        check = healthcheck_command(svc)
        if "-a" in check:
            value = check[check.index("-a") + 1]
            assert re.fullmatch(REF_NO_DEFAULT + "|" + CONTAINER_REF, value), f"{name}: healthcheck passes a literal password"
    for where, text in iter_strings(doc):
        # Credentials inside URLs: scheme://user:PASSWORD@host. References
        # are swapped for placeholders first: their messages hold spaces.
        hidden, refs = hide_refs(text)
        for match in re.finditer(r"://[^/\s:@]*:([^@\s/]+)@", hidden):
            password = refs.get(match.group(1), match.group(1))
            assert re.fullmatch(REF_NO_DEFAULT, password), f"{where}: literal password in URL {text!r}"
        # A default on a secret variable is a literal secret: ${REDIS_PASSWORD:-hunter2}
        for match in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-([^}]*)\}", text):
            if SECRET_NAME.search(match.group(1)):
                assert not match.group(2), f"{where}: {match.group(1)} has a literal default"
        for shape in KEY_SHAPES:
            assert not shape.search(text), f"{where}: looks like a literal credential: {text!r}"


def test_url_password_check_sees_through_references():
    hidden, refs = hide_refs("redis://:${REDIS_PASSWORD:?set it (openssl rand -hex 32)}@redis:6379/0")
    assert hidden == "redis://:ref0x@redis:6379/0"
    assert refs["ref0x"].startswith("${REDIS_PASSWORD")


def test_secret_check_catches_literals():
    # The checker itself must be able to fail.
    with pytest.raises(AssertionError):
        _check_no_literal_secret("x", "OPENAI_API_KEY", "sk-live-abcdefabcdefabcdef")
    with pytest.raises(AssertionError):
        _check_no_literal_secret("x", "REDIS_PASSWORD", "${REDIS_PASSWORD:-hunter2}")
    _check_no_literal_secret("x", "REDIS_PASSWORD", "${REDIS_PASSWORD:?set it}")


def test_promptq_image_services_are_recognised():
    # Sanity for the CLI test: the services it checks are the ones built from deploy/Dockerfile.
    names = {name for name, svc in services().items() if is_promptq_service(svc)}
    assert {"worker-cloud", "worker-local", "serve", "flower"} <= names, names
