"""A batch's spend limit: once its jobs cost `max_cost_usd`, the ones not
started yet are cancelled as workers take them, calling no provider.

Its own module: the bound on how many jobs run past the limit counts the
slots of the one worker here, and tests/workers/conftest's module worker
would add its own."""

from __future__ import annotations

import json

import pytest

from promptq.tasks.batch import set_spend_limit, submit_batch
from promptq.tasks.batch_results import batch_status, iter_results
from promptq.tasks.job import JobValidationError
from promptq.tasks.run import SPEND_LIMIT_MESSAGE
from tests.fakes.openai_server import FakeOpenAI
from tests.worker_process import WorkerProcess, wait_for
from tests.workers.test_cli import promptq as cli

KEY = "sk-test-spend-0123456789"


def test_a_batch_stops_starting_jobs_once_it_spent_its_limit(redis_server, client, tmp_path):
    with FakeOpenAI(api_key=KEY) as openai:
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai.base_url}
        with WorkerProcess(redis_server.url, ["openai"], env=env, concurrency=2, name="spend"):
            # Every prompt the same length, so every job costs the same: learn it from one.
            one = client.result(client.submit("limit me 999", to=["openai:gpt-4o-mini"]).id, timeout=30)
            each = one.result["cost_usd"]
            assert each > 0
            lines = [json.dumps({"custom_id": f"s{i}", "prompt": f"limit me {i:03d}"}) for i in range(30)]
            batch = submit_batch(client, lines, targets=["openai:gpt-4o-mini"], max_cost_usd=3.5 * each).batch_id
            status = wait_for(lambda: (s := batch_status(client, batch))["finished"] and s, 60, 0.1,
                              "the batch to finish")
            rows = list(iter_results(client, batch))
            called = [r for r in openai.requests if "limit me 0" in json.dumps(r.body)]
    # Three jobs' cost is under the limit, so a fourth starts; a job starts only
    # while the spend is under it, and at most 2 run at once: 4 or 5 succeed.
    assert 4 <= status["succeeded"] <= 5, status
    assert status["cancelled"] == 30 - status["succeeded"] and status["failed"] == 0
    assert status["spend_limit_reached"] and status["max_cost_usd"] == pytest.approx(3.5 * each)
    assert status["cost_usd"] == pytest.approx(status["succeeded"] * each)
    # The cancelled jobs called no provider, and their lines say why.
    assert len(called) == status["succeeded"]
    stopped = [r for r in rows if r["error"]]
    assert len(stopped) == status["cancelled"]
    assert {(r["error"]["code"], r["error"]["message"]) for r in stopped} == {("cancelled", SPEND_LIMIT_MESSAGE)}
    # The limit can be lifted (or changed) later, from Python or the CLI.
    assert set_spend_limit(client, batch, None)["max_cost_usd"] is None
    out = cli(redis_server, "batch", "limit", batch, "--max-cost-usd", "0.25")
    assert out.returncode == 0 and "spend limit 0.2500 USD" in out.stdout, out.stderr
    assert batch_status(client, batch)["max_cost_usd"] == 0.25


@pytest.mark.parametrize("args, error", [
    ((), "give either --max-cost-usd USD or --remove"),
    (("--max-cost-usd", "1", "--remove"), "give either --max-cost-usd USD or --remove"),
    (("--max-cost-usd", "-2"), "max_cost_usd: must be a number of US dollars above 0"),
])
def test_batch_limit_refuses_what_it_cannot_set(redis_server, client, args, error):
    batch = submit_batch(client, [json.dumps({"custom_id": "a", "prompt": "p"})], targets=["mock:m"]).batch_id
    out = cli(redis_server, "batch", "limit", batch, *args)
    assert out.returncode == 2 and error in out.stderr, (out.stdout, out.stderr)
    assert batch_status(client, batch)["max_cost_usd"] is None
    assert cli(redis_server, "batch", "limit", "no-such-batch", "--remove").returncode != 0


def test_submit_batch_refuses_a_bad_limit_before_sending_anything(client):
    with pytest.raises(JobValidationError, match="max_cost_usd"):
        submit_batch(client, [json.dumps({"custom_id": "a", "prompt": "p"})], targets=["mock:m"], max_cost_usd=0)
