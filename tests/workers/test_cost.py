"""What each job cost reaches its record, its `done` event, its batch line
and its batch's total, through a real worker and the vendors' fakes."""

from __future__ import annotations

import json

from promptq.tasks.batch import submit_batch
from promptq.tasks.batch_results import batch_status, iter_results
from promptq.tasks.pricing import NANO, Pricing
from tests.worker_process import wait_for


def listed_cost(provider: str, model: str, usage: dict) -> int:
    """Nano-dollars at the list price, for the tokens the fake reported."""
    return Pricing().cost_nano(provider, model, usage)


def test_a_batch_totals_exactly_what_its_jobs_cost(worker, client):
    # Prompts of different lengths, so the jobs cost different amounts.
    lines = [json.dumps({"custom_id": f"c{i}", "prompt": "price me " + "word " * (5 * i)}) for i in range(4)]
    batch = submit_batch(client, lines, targets=["openai:gpt-4o-mini"]).batch_id
    status = wait_for(lambda: (s := batch_status(client, batch))["finished"] and s, 60, 0.1, "the batch to finish")
    costs = []
    for row in iter_results(client, batch):
        usage = row["response"]["body"]["usage"]
        cost = listed_cost("openai", "gpt-4o-mini", {"input_tokens": usage["prompt_tokens"],
                                                     "output_tokens": usage["completion_tokens"]})
        assert cost > 0
        assert row["promptq"]["cost_usd"] == cost / NANO, row
        costs.append(cost)
    assert status["succeeded"] == 4 and len(set(costs)) == 4
    # Summed in Redis as integer nano-dollars: exact, not a float's drift.
    assert status["cost_usd"] == sum(costs) / NANO


def test_a_streamed_claude_job_says_its_cost_in_its_record_and_done_event(worker, client):
    handle = client.submit("what did this cost", to=["claude:claude-3-5-haiku-latest"], stream=True)
    record = client.result(handle.id, timeout=30)
    done = [e for e in client.events(handle.id, timeout=10) if e.get("type") == "done"]
    assert record.status.value == "succeeded"
    cost = listed_cost("claude", "claude-3-5-haiku-latest", record.result["usage"])
    assert cost > 0
    assert record.result["cost_usd"] == cost / NANO
    assert [e["cost_usd"] for e in done] == [cost / NANO]


def test_a_job_on_a_model_with_no_known_price_succeeds_with_its_cost_unknown(worker, client):
    handle = client.submit("price me if you can", to=["openai:no-such-model-xyz"])
    record = client.result(handle.id, timeout=30)
    assert record.status.value == "succeeded"
    assert record.result["cost_usd"] is None
    wait_for(lambda: "no list price known for openai:no-such-model-xyz" in worker.log(), 10, 0.1,
             "the worker to say the model has no price")

