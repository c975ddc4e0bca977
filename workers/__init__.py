"""What consumes the queue: worker start-up, metrics wiring and the CLI.

Dependencies flow one way: workers -> tasks -> providers.
"""
