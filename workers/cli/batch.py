"""Batch commands (submit, status, wait, results, cancel)."""

COMMANDS: list = []
