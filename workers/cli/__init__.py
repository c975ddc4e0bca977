"""The `promptq` command line: one module per group of commands."""
