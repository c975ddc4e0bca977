"""llama.cpp: a llama-server over HTTP, or the llama-completion binary as a subprocess.

Server mode (the default) speaks llama-server's OpenAI-compatible API
(`POST /v1/chat/completions`, SSE with `[DONE]`, errors such as
`exceed_context_size_error`); it is `openai_compat` with other defaults.
Subprocess mode (`mode: "cli"`) runs `llama-completion` once per call, as
the seed guide does with `llama-cli`, with the timeout, completeness check
and error handling the guide lacked (see llamacpp_cli: current `llama-cli`
is chat-only).

Configuration (each key falls back to its environment variable):

    mode             LLAMACPP_MODE        "server" (default) or "cli"
    base_url         LLAMACPP_BASE_URL    http://127.0.0.1:8080/v1 (llama-server's port and prefix)
    api_key          LLAMACPP_API_KEY     optional; llama-server's --api-key
    binary           LLAMACPP_BINARY      cli: "llama-completion" (default), a path, or an argv list;
                                          a pre-split build's "llama-cli" works too
    model_path       LLAMACPP_MODEL_PATH  cli: the .gguf used when `model` is not a file
    models_dir       LLAMACPP_MODELS_DIR  cli: where `model` (with or without .gguf) is looked up
    cli_args         (config only)        cli: flags added to every run (e.g. ["-ngl", "99"])
    max_tokens       (config only)        cli: default -n, 512
    timeout, connect_timeout, pool_size   (timeout: the whole run, in cli mode)
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional

from .base import Message, ProviderResult, ProviderStream, build_messages, resolve_setting
from .error_handling import ErrorCategory, ProviderError
from .llamacpp_cli import DEFAULT_BINARY, LlamaCLI
from .openai_compat import OpenAICompatProvider

DEFAULT_CLI_MAX_TOKENS = 512
DEFAULT_CLI_TIMEOUT_S = 300.0


class LlamaCppProvider(OpenAICompatProvider):
    name = "llamacpp"
    display_name = "llama.cpp"
    key_env_var = "LLAMACPP_API_KEY"
    needs_key = False
    base_url_env_var = "LLAMACPP_BASE_URL"
    default_base_url = "http://127.0.0.1:8080/v1"

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__(config)
        self.mode = str(resolve_setting(self.config, "mode", "LLAMACPP_MODE", "server")).strip().lower()
        if self.mode not in ("server", "cli"):
            raise ValueError(f"llama.cpp mode must be 'server' or 'cli', not {self.mode!r}")
        self.cli: Optional[LlamaCLI] = None
        if self.mode == "cli":
            binary = self.config.get("binary") or os.environ.get("LLAMACPP_BINARY") or DEFAULT_BINARY
            self.cli = LlamaCLI(
                provider=self.name,
                binary=list(binary) if isinstance(binary, (list, tuple)) else [str(binary)],
                model_path=resolve_setting(self.config, "model_path", "LLAMACPP_MODEL_PATH"),
                models_dir=resolve_setting(self.config, "models_dir", "LLAMACPP_MODELS_DIR"),
                timeout_s=float(self.config.get("timeout") or DEFAULT_CLI_TIMEOUT_S),
                extra_args=[str(a) for a in self.config.get("cli_args") or []],
                default_max_tokens=int(self.config.get("max_tokens") or DEFAULT_CLI_MAX_TOKENS),
            )

    def __repr__(self) -> str:
        return f"LlamaCppProvider(name={self.name!r}, mode={self.mode!r})"

    def complete(
        self,
        model: str,
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Message]] = None,
    ) -> ProviderResult:
        if self.cli is None:
            return super().complete(model, prompt, system_prompt, parameters, messages=messages)
        chat = build_messages(prompt, system_prompt, messages)
        return self.cli.complete(model, render_prompt(chat), parameters)

    def stream(
        self,
        model: str,
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Message]] = None,
    ) -> ProviderStream:
        if self.cli is None:
            return super().stream(model, prompt, system_prompt, parameters, messages=messages)
        chat = build_messages(prompt, system_prompt, messages)
        return self.cli.stream(model, render_prompt(chat), parameters)


def render_prompt(chat: List[Message]) -> str:
    """Chat messages as one plain-text prompt for llama.cpp's completion mode.

    A lone user message is passed as is; otherwise a role-labelled
    transcript ending in "Assistant:" cues the model to answer.
    """
    texts = [(m.get("role"), _content_text(m.get("content"))) for m in chat]
    if len(texts) == 1 and texts[0][0] == "user":
        return texts[0][1]
    for role, _ in texts:
        if role not in ("system", "user", "assistant"):
            raise ProviderError(
                f"llama-cli prompts accept system, user and assistant messages, not {role!r}",
                category=ErrorCategory.INVALID_REQUEST,
                provider="llamacpp",
                retryable=False,
            )
    lines = [f"{str(role).capitalize()}: {text}" for role, text in texts]
    return "\n".join(lines) + "\nAssistant:"


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return re.sub(r"\r\n?", "\n", str(content or ""))
