"""A fallback chain in one process, no queue: the provider layer on its own.

Run: .venv/bin/python examples/fallback_chain.py

Two mock providers stand in for real ones: "primary" is overloaded (an
endpoint failure, which degrades its health), so the chain falls back to
"backup", each with its own model. Swap in real ones with `manager.add_provider("openai", {})` (keys from OPENAI_API_KEY).
"""

from promptq.providers import AllProvidersFailed, ProviderManager


def main() -> None:
    manager = ProviderManager()
    manager.add_provider("primary", {"type": "mock", "fault": "overloaded"})
    manager.add_provider("backup", {"type": "mock", "reply": "{name} ({model}) says: {prompt}"})
    manager.setup_fallback_chain([("primary", "big-model"), ("backup", "small-model")])

    print(manager.execute_with_fallback(None, "What is a circuit breaker?"))
    for name, status in manager.get_provider_status().items():
        print(f"  {name}: {status['health']} ({status['errors']} errors, {status['successes']} ok)")

    print("streamed:", end=" ")
    for chunk in manager.stream_execute_with_fallback(None, "Stream this answer, please"):
        print(chunk, end="", flush=True)
    print()

    manager.add_provider("broken", {"type": "mock", "fault": "server"})
    manager.setup_fallback_chain(["primary", "broken"])
    try:
        manager.execute_with_fallback("any-model", "Nobody can answer this")
    except AllProvidersFailed as exc:
        print("all failed:", "; ".join(f"{name}: {err.category.value}" for name, err in exc.errors))


if __name__ == "__main__":
    main()
