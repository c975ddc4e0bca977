"""What travels on the queue: the job schema, the Celery app, the run task,
stream events and the producer API (submit / result / stream / batch).

Nothing here connects to Redis on import; `create_app(settings)` and
`Client(settings)` are the entry points.
"""
