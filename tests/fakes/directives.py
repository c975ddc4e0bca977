"""Per-request directives embedded in the prompt, and the reply they produce.

Queue workers run many jobs at once against one fake server, so a FIFO of
scripted faults cannot say *which* job fails.  Instead the prompt itself can
carry instructions, read from the last user message:

* ``[[fault:NAME]]`` / ``[[fault:NAME:ARG]]`` - apply that fault to this request
* ``[[reply:TEXT]]`` - answer with exactly TEXT instead of ``echo: <prompt>``
* ``[[chunks:N]]`` - stream the reply in N pieces

Directives are removed from the prompt before the default echo reply is built,
so the reply stays a pure function of what the user asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .faults import Fault, parse_fault

# One optional leading space is eaten with the directive so that
# "hello [[fault:slow]] world" cleans to "hello world".
DIRECTIVE_RE = re.compile(r" ?\[\[(fault|reply|chunks):(.*?)\]\]", re.DOTALL)


@dataclass
class Directives:
    fault: Optional[Fault] = None
    reply: Optional[str] = None
    chunks: Optional[int] = None
    clean_prompt: str = ""


def parse_directives(text: str) -> Directives:
    found = Directives()
    for kind, value in DIRECTIVE_RE.findall(text):
        if kind == "fault":
            found.fault = parse_fault(value)
        elif kind == "reply":
            found.reply = value
        elif kind == "chunks":
            found.chunks = max(1, int(value))
    found.clean_prompt = DIRECTIVE_RE.sub("", text).strip()
    return found


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of content parts.

    OpenAI, OpenRouter and llama-server accept ``[{"type": "text", "text": ...}]``
    parts; Anthropic uses the same shape for its content blocks.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content)


def last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def all_message_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return "\n".join(content_text(m.get("content")) for m in messages if isinstance(m, dict))


def split_words(text: str) -> list[str]:
    """Split keeping whitespace, so ``"".join(pieces) == text``."""
    pieces = re.findall(r"\s*\S+", text)
    if not pieces:
        return [text] if text else []
    tail = text[len("".join(pieces)):]
    pieces[-1] += tail
    return pieces


def split_even(text: str, count: int) -> list[str]:
    """Split into ``count`` nearly equal pieces (fewer if text is shorter)."""
    if not text:
        return []
    count = max(1, min(count, len(text)))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def split_size(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i:i + size] for i in range(0, len(text), size)]


@dataclass
class ReplyPlan:
    """Everything a server needs to answer one generation request."""

    text: str
    pieces: list[str]
    prompt_tokens: int
    completion_tokens: int
    directives: Directives = field(default_factory=Directives)


def plan_reply(
    messages: Any,
    *,
    chunk_count: Optional[int] = None,
    chunk_size: Optional[int] = None,
    extra_prompt: str = "",
) -> ReplyPlan:
    """Build the deterministic reply for a chat request.

    Token counts are word counts: deterministic, never zero, and close
    enough in magnitude for tests that check usage is passed through.
    """
    directives = parse_directives(last_user_text(messages))
    text = directives.reply if directives.reply is not None else f"echo: {directives.clean_prompt}"
    if directives.chunks is not None:
        pieces = split_even(text, directives.chunks)
    elif chunk_count is not None:
        pieces = split_even(text, chunk_count)
    elif chunk_size is not None:
        pieces = split_size(text, chunk_size)
    else:
        pieces = split_words(text)
    prompt_words = len((extra_prompt + "\n" + all_message_text(messages)).split())
    return ReplyPlan(
        text=text,
        pieces=pieces,
        prompt_tokens=max(1, prompt_words),
        completion_tokens=max(1, len(text.split())),
        directives=directives,
    )
