"""`promptq serve`: an OpenAI- and Anthropic-compatible HTTP front door built on AsyncClient."""
