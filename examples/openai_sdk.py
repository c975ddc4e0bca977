"""The official openai SDK pointed at promptq: every request is a durable job.

Run: .venv/bin/python examples/openai_sdk.py      (needs `pip install 'promptq[server]' openai`)

Starts a private Redis, a mock-provider worker and `promptq serve` on a free
loopback port (no API keys: loopback only), then asks once plainly and once
streamed. Against a real deployment only `base_url`, `api_key` and `model`
change (a route from the config file, or "openai:gpt-4o-mini").
"""

import os
import socket
import subprocess
import sys
import time

import httpx
from openai import OpenAI

from promptq.workers.local_stack import LocalStack, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    with LocalStack() as stack:
        if stack.private_redis:
            stack.add_worker(["mock"], name="example")
        port = free_port()
        env = {**os.environ, "PROMPTQ_REDIS_URL": stack.redis_url}
        env.pop("PROMPTQ_API_KEYS", None)
        serve = subprocess.Popen([sys.executable, "-P", "-m", "promptq.workers.cli.main", "serve", "--port", str(port),
                                  "--log-level", "warning"], env=env)
        try:
            wait_for(lambda: _up(port), 30, 0.1, "promptq serve")
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed-on-loopback")
            raw = client.chat.completions.with_raw_response.create(
                model="mock:demo", messages=[{"role": "user", "content": "What does a durable queue buy me?"}])
            reply = raw.parse()
            print(f"job {raw.headers['x-promptq-job-id']}: {reply.choices[0].message.content}")
            stream = client.chat.completions.create(
                model="mock:demo", stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "Stream this answer please"}])
            for chunk in stream:
                if chunk.choices:
                    print(chunk.choices[0].delta.content or "", end="", flush=True)
                elif chunk.usage:
                    print(f"\n{chunk.usage.completion_tokens} tokens")
        finally:
            serve.terminate()
            serve.wait(15)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.05)
        return False


if __name__ == "__main__":
    main()
