"""promptq's benchmark: `./scripts/bench` (or `python -m bench`).

Starts its own redis-server, fake OpenAI server and workers, runs each case
(one module each: overhead, concurrency, streaming, batch, memory, peer),
prints one table and writes `bench-results/latest.json`. See `bench.__main__`.
"""
