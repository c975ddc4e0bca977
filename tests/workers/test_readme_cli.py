"""The README's CLI reference names every command and every flag that exists,
and nothing that does not (checked against the click commands themselves,
which is what `promptq COMMAND --help` prints)."""

from __future__ import annotations

import re

import click

from promptq.workers.cli.main import cli
from tests.worker_process import ROOT

FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def commands(group: click.Group, path=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, path + (name,))
        else:
            yield path + (name,), command


def flags_of(params) -> set:
    out = set()
    for param in params:
        if isinstance(param, click.Option):
            out.update(param.opts, param.secondary_opts)
    return out - {"-h", "--help"}


def readme_reference():
    text = (ROOT / "README.md").read_text()
    section = text.split("### CLI reference", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for code in re.findall(r"^\| `promptq ([^`]+)`", section, flags=re.M):
        words = code.split()
        path = tuple(w for w in words[:2] if re.fullmatch(r"[a-z]+", w))
        rows[path] = set(FLAG.findall(code))
    global_line = next(line for line in section.splitlines() if line.startswith("Global options"))
    return rows, set(FLAG.findall(global_line.split("COMMAND")[0]))


def test_readme_lists_every_command_and_flag_and_no_other():
    rows, global_flags = readme_reference()
    real = dict(commands(cli))
    # batch/dlq rows name the subcommand second; single commands first.
    documented = {path if path in real else path[:1]: flags for path, flags in rows.items()}
    assert set(documented) == set(real), (
        f"missing from README: {sorted(set(real) - set(documented))}; "
        f"not commands: {sorted(set(documented) - set(real))}")
    for path, command in real.items():
        have = flags_of(command.params)
        assert documented[path] == have, (
            f"promptq {' '.join(path)}: README lacks {sorted(have - documented[path])}, "
            f"names flags that do not exist {sorted(documented[path] - have)}")
    assert global_flags - {"-h", "--help"} == flags_of(cli.params)
