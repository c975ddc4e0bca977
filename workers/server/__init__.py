"""`promptq serve`: an OpenAI- and Anthropic-compatible HTTP front door on `AsyncClient`.

An entry point like the CLI: it submits and follows jobs through
`promptq.tasks.async_client.AsyncClient` only (never promptq's Redis keys or
scripts), and never calls a provider. One concept a module:

    app.py                 the Starlette app, authentication middleware, lifespan (AsyncClient)
    config.py              ServerConfig, API keys (as digests), the loopback rule
    auth.py                Bearer / x-api-key check
    routing.py             `model` -> targets: provider:model or a configured route
    errors.py              ApiError in OpenAI's and Anthropic's shapes; failed job -> status
    jobs.py                admission (429), submit, wait, cancel on disconnect, Idempotency-Key
    sse.py                 server-sent events on the wire
    live.py                a streamed response that notices a disconnect while idle
    chat_route.py          a chat request, either dialect: parse, check, submit, stream or wait, errors
    chat_stream.py         a streamed job's events as SSE: when each frame goes, and how a stream ends
    openai_chat.py         /v1/chat/completions, /v1/models
    anthropic_messages.py  /v1/messages
    files.py               /v1/files (on disk)
    batch_book.py          the HTTP batches' own descriptions
    batches.py             /v1/batches (OpenAI) on promptq batches
    message_batches.py     /v1/messages/batches (Anthropic) on promptq batches
"""
