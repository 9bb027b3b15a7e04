#!/usr/bin/env python3
"""Plain greedy decoding: medusa-worker against llama.cpp on the same GGUF, same prompt tokens,
same thread count, alternating runs in one session. Prints a table and the ratio of medians.

The reference is llama.cpp as built by `pip install llama-cpp-python==0.3.36` (about 15 minutes on
2 cores; not part of `make test`).

    scripts/bench_vs_llamacpp.py [--model PATH] [--threads 1 2] [--tokens 200] [--runs 5] \
        [--matmul-inputs int16 [int8] [fp32]]

With several --matmul-inputs, each round runs ours once per setting, then llama.cpp once.

Both sides decode exactly --tokens tokens after the prompt (end-of-generation ignored) and report
decode tokens/s excluding the prompt: ours from `generate --json` (`tokens_per_second`), llama.cpp's
from timing `eval` of one token at a time with an argmax between them. Each llama.cpp run is its
own process that exits before the next run of ours: a resident llama.cpp keeps OpenMP threads
spinning after each call, which took 15-20% off whatever ran beside it on this 2-core machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_BINARY = os.path.join(ROOT, ".build/release/medusa-worker")
# SmolLM2's chat template applied to one user turn, without the default system message.
DEFAULT_PROMPT = ("<|im_start|>user\nWrite a short story about a robot learning to paint.<|im_end|>\n"
                  "<|im_start|>assistant\n")


def ours(binary, model, prompt, threads, tokens, inputs):
    out = subprocess.run(
        [binary, "generate", "--model", model, "--prompt", prompt, "--max-tokens", str(tokens),
         "--ignore-eos", "--threads", str(threads), "--matmul-inputs", inputs, "--json"],
        check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["completion_tokens"] == tokens, result
    return result["tokens_per_second"], result["token_ids"]


def prompt_tokens(binary, model, prompt):
    out = subprocess.run([binary, "tokenize", "--model", model, "--text", prompt, "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["token_ids"]


class LlamaCpp:
    def __init__(self, model, threads):
        import llama_cpp
        self.llm = llama_cpp.Llama(model_path=model, n_ctx=1024, n_batch=512, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)

    def run(self, prompt, tokens):
        import numpy as np
        llm = self.llm
        llm.reset()
        llm.eval(prompt)
        generated = []
        # Without logits_all, llama-cpp-python 0.3.x no longer copies logits into `llm.scores` (it
        # stays zero): read the context's logits of the last evaluated token directly.
        def last_logits():
            return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        start = time.perf_counter()
        token = int(np.argmax(last_logits()))
        for _ in range(tokens - 1):
            generated.append(token)
            llm.eval([token])
            token = int(np.argmax(last_logits()))
        generated.append(token)
        seconds = time.perf_counter() - start
        # As ours: the first token comes from the prompt's logits, so tokens - 1 decode steps.
        return (tokens - 1) / seconds, generated


def reference_run(model, threads, prompt, tokens):
    """One llama.cpp measurement in a fresh process: (tokens/s, generated ids)."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--reference-run", "--model", model, "--threads", str(threads),
         "--tokens", str(tokens), "--prompt-ids", ",".join(map(str, prompt))],
        check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["rate"], result["ids"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--binary", default=DEFAULT_BINARY)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--matmul-inputs", nargs="+", default=["int16"], choices=["int16", "int8", "fp32"],
                        help="our activation rounding(s) to measure (default: int16, the default of medusa-worker)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--reference-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prompt-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.reference_run:
        reference = LlamaCpp(args.model, args.threads[0])
        prompt = [int(t) for t in args.prompt_ids.split(",")]
        reference.run(prompt, 8)  # warm-up
        rate, ids = reference.run(prompt, args.tokens)
        print(json.dumps({"rate": rate, "ids": ids}))
        return

    prompt = prompt_tokens(args.binary, args.model, args.prompt)
    rows = []
    for threads in args.threads:
        mine = {inputs: [] for inputs in args.matmul_inputs}
        theirs = []
        same_tokens = {inputs: True for inputs in args.matmul_inputs}
        for _ in range(args.runs):
            ours_ids = {}
            for inputs in args.matmul_inputs:
                rate, ours_ids[inputs] = ours(args.binary, args.model, args.prompt, threads, args.tokens, inputs)
                mine[inputs].append(rate)
            rate, ref_ids = reference_run(args.model, threads, prompt, args.tokens)
            theirs.append(rate)
            for inputs in args.matmul_inputs:
                same_tokens[inputs] = same_tokens[inputs] and ours_ids[inputs] == ref_ids
        reference = statistics.median(theirs)
        for inputs in args.matmul_inputs:
            rows.append({
                "threads": threads, "matmul_inputs": inputs, "prompt_tokens": len(prompt), "tokens": args.tokens,
                "runs": args.runs, "medusa_tp_tok_s": statistics.median(mine[inputs]), "llama_cpp_tok_s": reference,
                "ratio": statistics.median(mine[inputs]) / reference,
                "medusa_tp_runs": [round(r, 1) for r in mine[inputs]], "llama_cpp_runs": [round(r, 1) for r in theirs],
                "same_greedy_tokens": same_tokens[inputs],
            })
    if args.json:
        print(json.dumps(rows))
        return
    print(f"model {os.path.basename(args.model)}, prompt {len(prompt)} tokens, {args.tokens} tokens, "
          f"median of {args.runs} alternating runs")
    print("threads  inputs  medusa-tp tok/s  llama.cpp tok/s  ratio  same greedy tokens")
    for r in rows:
        print(f"{r['threads']:>7}  {r['matmul_inputs']:>6}  {r['medusa_tp_tok_s']:>15.1f}  {r['llama_cpp_tok_s']:>15.1f}  "
              f"{r['ratio']:>5.2f}  {r['same_greedy_tokens']}")


if __name__ == "__main__":
    sys.exit(main())
