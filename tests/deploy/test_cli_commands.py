"""Every promptq command compose.yaml runs must exist in the real CLI.

The image's ENTRYPOINT is `promptq`, so a service's `command:` is a promptq
subcommand and its flags. A renamed subcommand or flag would otherwise show
up only as a container in a restart loop. These tests import the CLI itself
(`workers.cli.main`, a click Group named `cli`) and let click parse each
command line, so they fail, not skip, while the CLI is missing or broken.
"""

from __future__ import annotations

import tomllib
from typing import List

import click
import pytest

from promptq.tasks.settings import Settings, SettingsError

from .helpers import (
    REPO,
    command_tokens,
    healthcheck_command,
    is_promptq_service,
    option_value,
    published_ports,
    services,
    worker_services,
)


@pytest.fixture(scope="module")
def cli() -> click.Group:
    try:
        from promptq.workers.cli.main import cli as group
    except ImportError as exc:  # a failure, not a skip: compose depends on this CLI
        pytest.fail(f"promptq.workers.cli.main does not import ({exc}); compose.yaml's commands cannot be checked")
    assert isinstance(group, click.Group), f"promptq.workers.cli.main.cli is a {type(group).__name__}, not a click Group"
    return group


def _promptq_command_lines() -> List[tuple]:
    """(where, argv after `promptq`) for each promptq invocation in compose.yaml."""
    lines = []
    for name, svc in services().items():
        if is_promptq_service(svc) and command_tokens(svc):
            lines.append((f"{name}.command", command_tokens(svc)))
        check = healthcheck_command(svc)
        if check[:1] == ["promptq"]:
            lines.append((f"{name}.healthcheck", check[1:]))
    return lines


def _option_names(command: click.Command) -> set:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


def _check_command_line(cli: click.Group, where: str, argv: List[str]) -> None:
    sub = argv[0]
    assert sub in cli.commands, f"{where}: `promptq {sub}` is not a command (have: {sorted(cli.commands)})"
    command = cli.commands[sub]
    known = _option_names(command)
    for token in argv[1:]:
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            assert flag in known, f"{where}: `promptq {sub}` has no option {flag} (has: {sorted(known)})"
    # Let click parse the whole line (types, choices, missing values) without running it.
    try:
        command.make_context(sub, list(argv[1:]), parent=click.Context(cli, info_name="promptq"))
    except click.ClickException as exc:
        pytest.fail(f"{where}: click rejects `promptq {' '.join(argv)}`: {exc.format_message()}")


def test_compose_runs_promptq_commands():
    # Guards the test below against passing vacuously.
    subs = {argv[0] for _, argv in _promptq_command_lines()}
    assert {"worker", "flower", "serve"} <= subs, subs


def test_every_promptq_command_in_compose_exists(cli):
    for where, argv in _promptq_command_lines():
        _check_command_line(cli, where, argv)


def test_unknown_commands_and_flags_are_caught(cli):
    # The checker must be able to fail.
    with pytest.raises(AssertionError):
        _check_command_line(cli, "test", ["no-such-command"])
    with pytest.raises(AssertionError):
        _check_command_line(cli, "test", ["worker", "--no-such-flag", "1"])


def _effective_option(command: click.Command, argv: List[str], name: str):
    """The value click would give option `name`: from argv, else its default."""
    ctx = command.make_context(argv[0], list(argv[1:]), parent=click.Context(click.Group(), info_name="promptq"))
    return ctx.params.get(name)


def test_published_promptq_services_listen_beyond_the_container_loopback(cli):
    # A port published from a process bound to 127.0.0.1 *inside* the
    # container is dead: Docker forwards to the container's own interface.
    # (The host side stays loopback-only; test_compose checks that.)
    for name, svc in services().items():
        argv = command_tokens(svc)
        if not (is_promptq_service(svc) and svc.get("ports") and argv):
            continue
        command = cli.commands[argv[0]]
        bind = {"address", "host"} & {p.name for p in command.params}  # flower --address, serve --host
        assert bind, f"{name}: publishes a port, but `promptq {argv[0]}` has no bind option to check"
        address = _effective_option(command, argv, bind.pop())
        assert address in ("0.0.0.0", "::", ""), f"{name}: `promptq {argv[0]}` binds {address!r} in the container"


def test_published_promptq_services_publish_the_port_they_listen_on(cli):
    # `serve` without --port listens on its default (8000): the published
    # target must be whatever click would give the command, default included.
    checked = set()
    for name, svc in services().items():
        argv = command_tokens(svc)
        if not (is_promptq_service(svc) and svc.get("ports") and argv):
            continue
        listens = str(_effective_option(cli.commands[argv[0]], argv, "port"))
        targets = {target for _, _, target in published_ports(svc)}
        assert targets == {listens}, f"{name}: `promptq {argv[0]}` listens on {listens}, compose publishes {targets}"
        checked.add(argv[0])
    assert {"serve", "flower"} <= checked, checked
    assert str(_effective_option(cli.commands["serve"], ["serve"], "port")) == "8000"  # serve's default, as README says


def test_worker_flag_values_are_valid():
    from promptq.providers.registry import known_providers, resolve_name

    names = set(known_providers())
    for name, svc in worker_services().items():
        tokens = command_tokens(svc)
        for provider in (option_value(tokens, "--providers") or "").split(","):
            assert resolve_name(provider) in names, f"{name}: unknown provider {provider!r}"
        changes = {}
        if option_value(tokens, "--pool"):
            changes["pool"] = option_value(tokens, "--pool")
        if option_value(tokens, "--concurrency"):
            changes["concurrency"] = int(option_value(tokens, "--concurrency"))
        try:
            Settings().with_overrides(**changes)
        except SettingsError as exc:
            pytest.fail(f"{name}: {exc}")


def test_worker_healthchecks_ping_their_own_group():
    from celery import Celery
    from celery.app.utils import find_app

    for name, svc in worker_services().items():
        check = healthcheck_command(svc)
        group = option_value(command_tokens(svc), "--name")
        assert group, f"{name}: give the worker group a --name (its node name is GROUP@hostname)"
        if check[:1] != ["celery"]:
            continue  # another kind of check; nothing to cross-reference
        assert "ping" in check, check
        dest = option_value(check, "-d") or option_value(check, "--destination")
        assert dest and dest.split("@", 1)[0] == group, f"{name}: healthcheck pings {dest!r}, but the worker is {group}@..."
        # The same app the CLI hands to `celery -A`; find_app is how Celery resolves -A.
        app_name = option_value(check, "-A") or option_value(check, "--app")
        assert app_name, check
        assert isinstance(find_app(app_name), Celery), f"{name}: -A {app_name} is not a Celery app"


def test_console_script_is_the_cli():
    # The image's ENTRYPOINT is the `promptq` console script.
    with (REPO / "pyproject.toml").open("rb") as fh:
        scripts = tomllib.load(fh)["project"]["scripts"]
    assert "promptq" in scripts, "pyproject.toml declares no `promptq` console script"
    module_name, _, attr = scripts["promptq"].partition(":")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(f"the promptq console script's module {module_name} does not import: {exc}")
    assert callable(getattr(module, attr, None)), f"{scripts['promptq']} is not callable"
