#!/usr/bin/env python3
"""Stand-in for llama.cpp's ``llama-cli`` binary, for the subprocess provider.

Run as ``python tests/fakes/llama_cli.py -m MODEL -p PROMPT -n N [...]``.
Self-contained on purpose (no package imports) so it runs as a plain script.

Behaviour mirrors llama-cli in single-prompt mode:

* the generated text goes to stdout, word by word, flushed as it is produced;
  like the real binary it first echoes the prompt unless
  ``--no-display-prompt`` is given; a final newline ends the output;
* log lines (model load, timings) go to stderr;
* ``-n N`` / ``--n-predict N`` caps the reply at N tokens (words here;
  negative means no limit, the real default being -1);
* every other flag (``-c``, ``--temp``, ``-no-cnv``, ``-ngl`` ...) is accepted
  and ignored; ``-f FILE`` reads the prompt from a file.

Behaviours picked by directives in the prompt:

* ``[[reply:TEXT]]`` - generate TEXT instead of ``echo: <prompt>``;
* ``[[fault:slow:S]]`` - sleep S seconds (default 1) before generating;
* ``[[fault:slow_stream:S]]`` - sleep S seconds (default 0.5) between words;
* ``[[fault:crash:K]]`` - print K words (default 0), then fail like a decode
  error: message on stderr, exit status 1;
* ``[[fault:not_found]]`` - llama.cpp's "failed to open model" messages on
  stderr, exit status 1, nothing on stdout;
* ``[[fault:hang]]`` - never finish (for subprocess timeout tests).
"""

from __future__ import annotations

import re
import sys
import time

DIRECTIVE_RE = re.compile(r" ?\[\[(fault|reply):(.*?)\]\]", re.DOTALL)


def parse_args(argv: list[str]) -> dict:
    """Pick out the flags we use; skip everything else (llama-cli has ~200)."""
    opts = {"model": "models/model.gguf", "prompt": "", "n_predict": -1, "display_prompt": True}
    valued = {"-m": "model", "--model": "model", "-p": "prompt", "--prompt": "prompt",
              "-n": "n_predict", "--n-predict": "n_predict", "--predict": "n_predict", "-f": "file", "--file": "file"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in valued and i + 1 < len(argv):
            opts[valued[arg]] = argv[i + 1]
            i += 2
            continue
        if arg == "--no-display-prompt":
            opts["display_prompt"] = False
        i += 1
    if "file" in opts:
        with open(opts["file"], encoding="utf-8") as handle:
            opts["prompt"] = handle.read()
    opts["n_predict"] = int(opts["n_predict"])
    return opts


def log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def model_missing(model: str) -> int:
    # The real sequence when -m points at no file (as logged by llama.cpp builds of late 2024).
    log(f"gguf_init_from_file: failed to open '{model}': 'No such file or directory'")
    log(f"llama_model_load: error loading model: llama_model_loader: failed to load model from {model}")
    log("")
    log("llama_load_model_from_file: failed to load model")
    log(f"common_init_from_params: failed to load model '{model}'")
    log("main: error: unable to load model")
    return 1


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

    log("build: 6000 (fake0001) with fake-cc for x86_64-linux-gnu")
    if fault_name == "not_found":
        return model_missing(model)
    log(f"llama_model_loader: loaded meta data with 30 key-value pairs and 291 tensors from {model} (version GGUF V3 (latest))")
    if fault_name == "slow":
        time.sleep(float(fault_arg or 1))
    if fault_name == "hang":
        while True:
            time.sleep(3600)

    words = re.findall(r"\s*\S+", reply if reply is not None else f"echo: {clean}")
    if opts["n_predict"] >= 0:
        words = words[: opts["n_predict"]]
    crash_at = int(fault_arg or 0) if fault_name == "crash" else None
    gap = float(fault_arg or 0.5) if fault_name == "slow_stream" else 0.0

    if opts["display_prompt"]:
        sys.stdout.write(prompt)
        sys.stdout.flush()
    for index, word in enumerate(words):
        if index == crash_at:
            break
        if index and gap:
            time.sleep(gap)
        sys.stdout.write(word)
        sys.stdout.flush()
    if crash_at is not None:
        log("decode: failed to find a memory slot for batch of size 512")
        log("llama_decode: failed to decode, ret = 1")
        log("main : failed to eval")
        return 1
    sys.stdout.write("\n")
    sys.stdout.flush()
    log("")
    log("llama_perf_context_print:        load time =      12.34 ms")
    log(f"llama_perf_context_print:        eval time =      {10.0 * len(words):.2f} ms / {len(words)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
