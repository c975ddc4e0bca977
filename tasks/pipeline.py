"""Pipelines of Lua script calls in one round trip.

redis-py's pipeline asks Redis whether every script is loaded (SCRIPT
EXISTS) before it sends the calls: one more round trip per use, on the hot
path of every job. The worker's store, events and deferral pipelines go
through `execute_scripts` instead.
"""

from __future__ import annotations

from typing import Any, List

import redis


def execute_scripts(client: Any, pipe: Any) -> List[Any]:
    """`pipe.execute(raise_on_error=False)` without redis-py's SCRIPT EXISTS.

    A redis-py pipeline that calls Lua scripts first asks Redis whether they
    are loaded: one more round trip per job. Here the calls go straight out
    as EVALSHA; if Redis answers NOSCRIPT (it restarted, or SCRIPT FLUSH),
    none of that call ran, so the scripts are loaded and exactly the refused
    calls are sent again, in order. Replies (errors included) come back in
    the order the commands were queued.
    """
    scripts, pipe.scripts = list(pipe.scripts), set()
    stack = list(pipe.command_stack)
    replies = pipe.execute(raise_on_error=False)
    refused = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
    if refused:
        for script in scripts:
            client.script_load(script.script)
        again = client.pipeline(transaction=False)
        for i in refused:
            args, options = stack[i]
            again.execute_command(*args, **options)
        for i, reply in zip(refused, again.execute(raise_on_error=False)):
            replies[i] = reply
    return replies
