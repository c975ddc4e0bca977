#!/usr/bin/env python3
"""Stand-in for llama.cpp's ``llama-completion`` and current ``llama-cli``.

Run as ``python tests/fakes/llama_cli.py [--fake-binary=NAME] -m MODEL -f FILE -n N [...]``.
Self-contained on purpose (no package imports) so it runs as a plain script.
Words stand in for tokens.

``--fake-binary=llama-completion`` (the default) mirrors llama.cpp's
single-prompt completion program (tools/completion), which builds from
before the split also called ``llama-cli``:

* the generated text goes to stdout, word by word, flushed as it is
  produced; the prompt is echoed first unless ``--no-display-prompt``;
* a natural end prints `` [end of text]``; then ``\\n\\n`` and the closing
  performance lines on stderr (``llama_perf_sampler_print`` and
  ``llama_perf_context_print``: load, prompt eval ``/ P tokens``, eval
  ``/ R runs``, total time, graphs reused). The last sampled token is never
  evaluated, so R is one less than the tokens sampled (the end-of-generation
  token counts as sampled);
* ``-n N`` caps the sampled tokens (negative: no limit); ``-c N`` is the
  context size: a prompt over ``N - 4`` tokens fails with
  ``llama_completion: prompt is too long (P tokens, max N-4)``, exit 1;
* ``-r STOP`` stops after the word that completes STOP (it is printed);
* ``-p PROMPT`` or ``-f FILE`` (a trailing newline of the file is dropped);
  every other flag (``--temp``, ``-no-cnv``, ``-ngl`` ...) is accepted and ignored.

``--fake-binary=llama-cli`` is current llama.cpp's chat-only ``llama-cli``:
given ``-no-cnv`` it logs "--no-conversation is not supported by llama-cli"
/ "please use llama-completion instead", then, as the real one does with
stdin at EOF, prints ``> `` prompts on stdout without end.

Behaviours picked by directives in the prompt:

* ``[[reply:TEXT]]`` - generate TEXT instead of ``echo: <prompt>``;
* ``[[fault:slow:S]]`` - sleep S seconds (default 1) before generating;
* ``[[fault:slow_stream:S]]`` - sleep S seconds (default 0.5) between words;
* ``[[fault:crash:K]]`` - print K words (default 0), then fail like a decode
  error: message on stderr, exit status 1;
* ``[[fault:not_found]]`` - llama.cpp's "failed to open model" messages on
  stderr, exit status 1, nothing on stdout;
* ``[[fault:lost_tail:K]]`` - the asynchronous logger's loss at exit: only
  K words (default 0) reach stdout, no performance lines, exit status 0;
* ``[[fault:no_perf]]`` - the whole text, but the performance lines are lost;
* ``[[fault:lost_error]]`` - with a too-long prompt, exit 1 before the
  "prompt is too long" line is written;
* ``[[fault:hang]]`` - never finish (for subprocess timeout tests).
"""

from __future__ import annotations

import re
import sys
import time

DIRECTIVE_RE = re.compile(r" ?\[\[(fault|reply):(.*?)\]\]", re.DOTALL)
VALUED = {"-m": "model", "--model": "model", "-p": "prompt", "--prompt": "prompt",
          "-n": "n_predict", "--n-predict": "n_predict", "--predict": "n_predict", "-f": "file", "--file": "file",
          "-c": "ctx_size", "--ctx-size": "ctx_size"}


def parse_args(argv: list[str]) -> dict:
    """Pick out the flags we use; skip everything else (llama.cpp has ~200)."""
    opts = {"model": "models/model.gguf", "prompt": "", "n_predict": -1, "display_prompt": True,
            "ctx_size": 4096, "binary": "llama-completion", "no_cnv": False, "reverse": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--fake-binary="):
            opts["binary"] = arg.split("=", 1)[1]
        elif arg in VALUED and i + 1 < len(argv):
            opts[VALUED[arg]] = argv[i + 1]
            i += 2
            continue
        elif arg in ("-r", "--reverse-prompt") and i + 1 < len(argv):
            opts["reverse"].append(argv[i + 1])
            i += 2
            continue
        elif arg == "--no-display-prompt":
            opts["display_prompt"] = False
        elif arg in ("-no-cnv", "--no-conversation"):
            opts["no_cnv"] = True
        i += 1
    if "file" in opts:
        with open(opts["file"], encoding="utf-8") as handle:
            text = handle.read()
        opts["prompt"] = text[:-1] if text.endswith("\n") else text
    opts["n_predict"] = int(opts["n_predict"])
    opts["ctx_size"] = int(opts["ctx_size"])
    return opts


def log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def model_missing(model: str) -> int:
    # The real sequence when -m points at no file (as logged by llama.cpp builds of late 2024).
    log(f"gguf_init_from_file: failed to open '{model}': 'No such file or directory'")
    log(f"llama_model_load: error loading model: llama_model_loader: failed to load model from {model}")
    log("")
    log("llama_load_model_from_file: failed to load model")
    log(f"common_init_from_params: failed to load model '{model}'")
    log("main: error: unable to load model")
    return 1


def chat_only_cli(opts: dict) -> int:
    """Current llama-cli: no completion mode; with stdin at EOF it prompts forever."""
    if opts["no_cnv"]:
        log("--no-conversation is not supported by llama-cli")
        log("please use llama-completion instead")
    log(f"llama_model_loader: loaded meta data with 30 key-value pairs from {opts['model']}")
    while True:
        out("\n> ")
        time.sleep(0.01)


def perf_lines(prompt_tokens: int, eval_runs: int, sampled: int) -> None:
    log(f"llama_perf_sampler_print:    sampling time =       {0.1 * sampled:.2f} ms / {sampled:5d} runs")
    log("llama_perf_context_print:        load time =      12.34 ms")
    log(f"llama_perf_context_print: prompt eval time =       {1.0 * prompt_tokens:.2f} ms / {prompt_tokens:5d} tokens")
    log(f"llama_perf_context_print:        eval time =      {10.0 * eval_runs:.2f} ms / {eval_runs:5d} runs")
    log(f"llama_perf_context_print:       total time =      99.00 ms / {prompt_tokens + eval_runs:5d} tokens")
    log("llama_perf_context_print:    graphs reused =          0")


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    prompt, model = opts["prompt"], opts["model"]
    fault_name, fault_arg, reply = None, None, None
    for kind, value in DIRECTIVE_RE.findall(prompt):
        if kind == "fault":
            fault_name, _, fault_arg = value.partition(":")
        else:
            reply = value
    clean = DIRECTIVE_RE.sub("", prompt).strip()

    log("build: 7300 (fake0002) with fake-cc for x86_64-linux-gnu")
    if opts["binary"] == "llama-cli":
        return chat_only_cli(opts)
    if fault_name == "not_found":
        return model_missing(model)
    log(f"llama_model_loader: loaded meta data with 30 key-value pairs and 291 tensors from {model} (version GGUF V3 (latest))")
    # Load chatter that mentions n_ctx: not an error by itself.
    log(f"llama_context: n_ctx         = {opts['ctx_size']}")
    if fault_name == "slow":
        time.sleep(float(fault_arg or 1))
    if fault_name == "hang":
        while True:
            time.sleep(3600)

    prompt_tokens = len(prompt.split()) + 1  # + BOS
    if prompt_tokens > opts["ctx_size"] - 4:
        if fault_name != "lost_error":
            log(f"llama_completion: prompt is too long ({prompt_tokens} tokens, max {opts['ctx_size'] - 4})")
        return 1

    words = re.findall(r"\s*\S+", reply if reply is not None else f"echo: {clean}")
    limited = 0 <= opts["n_predict"] <= len(words)
    if limited:
        words = words[: opts["n_predict"]]
    crash_at = int(fault_arg or 0) if fault_name == "crash" else None
    gap = float(fault_arg or 0.5) if fault_name == "slow_stream" else 0.0
    keep = int(fault_arg or 0) if fault_name == "lost_tail" else None

    if opts["display_prompt"]:
        out(prompt)
    produced = ""
    stopped = False
    for index, word in enumerate(words):
        if index == crash_at:
            break
        if index and gap:
            time.sleep(gap)
        if keep is None or index < keep:
            out(word)
        produced += word
        if any(stop in produced for stop in opts["reverse"]):
            words, stopped = words[: index + 1], True
            break
    if crash_at is not None:
        log("decode: failed to find a memory slot for batch of size 512")
        log("llama_decode: failed to decode, ret = 1")
        log("main : failed to eval")
        return 1
    if keep is not None:
        return 0  # the logger's queue (the rest of the text, the perf lines) is lost
    natural_end = not limited and not stopped
    if natural_end:
        out(" [end of text]\n")
    out("\n\n")
    if fault_name == "no_perf":
        return 0
    # Tokens sampled: the words, plus the end-of-generation token at a natural end.
    sampled = len(words) + (1 if natural_end else 0)
    log("")
    perf_lines(prompt_tokens, max(0, sampled - 1), sampled)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
