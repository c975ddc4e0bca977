"""A bare `pip install promptq` runs the README's first job.

The test venv carries every test extra, which would hide a dependency the
package uses but does not declare (kombu's Redis transport needs `packaging`,
which only kombu's `redis` extra brings). So this builds promptq's wheel from
the tree under test, installs it into a new, empty virtualenv with nothing
but its declared dependencies (from the wheelhouse `scripts/bootstrap test`
collected; no network here), and runs `promptq demo` to completion from a
directory that looks like a user's Celery project: its own `tasks.py`,
`workers.py` and `providers.py` must neither break promptq nor be broken by
it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / ".wheelhouse"

USER_MODULES = {
    "tasks.py": "from celery import Celery\napp = Celery('tasks')\n\n@app.task\ndef add(x, y):\n    return x + y\n",
    "workers.py": "raise ImportError('the user\\'s own workers.py was imported by promptq')\n",
    "providers.py": "raise ImportError('the user\\'s own providers.py was imported by promptq')\n",
}


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory):
    if not any(WHEELHOUSE.glob("celery-*.whl")):
        pytest.fail(f"{WHEELHOUSE} has no dependency wheels: run ./scripts/test (its bootstrap collects them)")
    work = tmp_path_factory.mktemp("clean-install")
    dist = work / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--find-links", str(WHEELHOUSE),
          "--wheel-dir", str(dist), str(ROOT)])
    wheel = next(dist.glob("promptq-*.whl"))
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(WHEELHOUSE), str(wheel)])
    return env_dir


def _project_dir(tmp_path: Path) -> Path:
    project = tmp_path / "celery-project"
    project.mkdir()
    for name, text in USER_MODULES.items():
        (project / name).write_text(text)
    return project


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTQ_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    return env


def test_wheel_installs_only_promptq_namespace(clean_venv):
    site = next((clean_venv / "lib").glob("python3*/site-packages"))
    top = {p.name for p in site.iterdir()}
    assert "promptq" in top
    for generic in ("tasks", "workers", "providers"):
        assert generic not in top, f"the wheel installs a top-level {generic!r}"
    listed = _run([str(clean_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"]).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    for extra_only in ("pytest", "gevent", "openai", "anthropic"):
        assert extra_only not in names, f"{extra_only} should not be in a bare install"


def test_public_api_imports_beside_a_users_tasks_py(clean_venv, tmp_path):
    project = _project_dir(tmp_path)
    probe = ("import tasks, promptq\n"
             "from promptq import Client, Settings, submit_batch, ProviderError\n"
             "assert tasks.add.name == 'tasks.add'\n"
             "print(Client.__module__)\n")
    out = _run([str(clean_venv / "bin" / "python"), "-c", probe], cwd=project, env=_env()).stdout
    assert out.strip() == "promptq.tasks.client"


def test_demo_runs_in_a_celery_project_with_only_declared_dependencies(clean_venv, tmp_path):
    project = _project_dir(tmp_path)
    proc = subprocess.run([str(clean_venv / "bin" / "promptq"), "demo"], cwd=project, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "succeeded 24/24" in proc.stderr
    results = project / ".promptq" / "demo-results.jsonl"
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == 24 and all(line["response"]["status_code"] == 200 for line in lines)
