#!/usr/bin/env python3
"""Serving benchmark: N concurrent clients send MT-Bench first turns to `medusa-worker serve`.

For each concurrency level (default 1, 4, 8) the clients send --requests chat requests between
them (greedy, a fixed max_tokens), each client one request at a time. Reported per level: the
aggregate generated tokens per second (all completion tokens / wall time of the level), the p50
and p95 request latency, the mean tokens per verify step from /metrics, and with Medusa how many
answers equal plain decoding's (greedy Medusa must not change them). The server is started here
under `mpirun -np NP`, plain and, with --heads, again with Medusa heads.

    scripts/bench-server.py                        # plain decoding, 2 ranks
    scripts/bench-server.py --heads models/h1      # plain, then Medusa with those heads
    scripts/bench-server.py --np 1 --threads 2 --concurrency 1,8 --max-tokens 64 --json

Needs the release build (`swift build -c release`). Prints a Markdown table (or JSON with --json).
"""

import argparse
import json
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from medusa_serve import Server, metric  # noqa: E402

MT_BENCH = os.path.join("..", "shared", "data", "mt_bench_question.jsonl")


def find_above(relative, start):
    """The first `relative` below `start` or a folder above it (the CLI's findAbove), or None."""
    folder = os.path.abspath(start)
    while True:
        candidate = os.path.normpath(os.path.join(folder, relative))
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def load_prompts(path):
    prompts = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "turns" in row:
                prompts.append(row["turns"][0])
            elif "prompt" in row:
                prompts.append(row["prompt"])
            else:
                sys.exit(f"{path}:{number}: expected a \"turns\" array or a \"prompt\" string")
    if not prompts:
        sys.exit(f"{path}: no prompts")
    return prompts


def percentile(values, p):
    """The nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def run_level(server, model, prompts, concurrency, requests, max_tokens):
    """Sends `requests` prompts with `concurrency` clients; returns the level's measurements."""
    before = server.metrics()
    next_prompt = iter(range(requests))
    lock = threading.Lock()
    latencies, tokens, texts = [], [], {}

    def client():
        while True:
            with lock:
                i = next(next_prompt, None)
            if i is None:
                return
            body = {"model": model, "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                    "max_tokens": max_tokens, "temperature": 0}
            began = time.perf_counter()
            status, answer = server.post("/v1/chat/completions", body)
            elapsed = time.perf_counter() - began
            if status != 200:
                raise RuntimeError(f"request {i} failed with {status}: {answer}")
            with lock:
                latencies.append(elapsed)
                tokens.append(answer["usage"]["completion_tokens"])
                texts[i] = answer["choices"][0]["message"]["content"]

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - began
    after = server.metrics()
    steps = metric(after, "medusa_verify_steps_total") - metric(before, "medusa_verify_steps_total")
    accepted = metric(after, "medusa_accepted_tokens_total") - metric(before, "medusa_accepted_tokens_total")
    return {
        "concurrency": concurrency, "requests": requests, "completion_tokens": sum(tokens), "seconds": wall,
        "tokens_per_second": sum(tokens) / wall, "p50_latency_s": percentile(latencies, 50),
        "p95_latency_s": percentile(latencies, 95), "mean_tokens_per_step": accepted / steps if steps else None,
        "texts": [texts[i] for i in range(requests)],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model for the server (default: the server's default, $MEDUSA_MODEL or SmolLM2)")
    parser.add_argument("--heads", help="Medusa heads folder or file: also benchmark Medusa decoding")
    parser.add_argument("--tree", help="candidate tree for --heads (file or preset name; the server's default if omitted)")
    parser.add_argument("--np", type=int, default=2, help="ranks (mpirun -np), default 2")
    parser.add_argument("--threads", type=int, default=1, help="threads per rank, default 1")
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated client counts, default 1,4,8")
    parser.add_argument("--requests", type=int, default=16, help="requests per level, default 16")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request, default 128")
    parser.add_argument("--ctx", type=int, default=1024, help="the server's --ctx, default 1024")
    parser.add_argument("--prompts", help="JSON Lines of MT-Bench questions or {\"prompt\": ...} (default: MT-Bench)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    levels = [int(c) for c in args.concurrency.split(",")]
    prompts_file = args.prompts or find_above(MT_BENCH, os.getcwd()) or find_above(MT_BENCH, os.path.dirname(__file__))
    if prompts_file is None:
        sys.exit(f"no --prompts given and {MT_BENCH} not found above the working directory")
    prompts = load_prompts(prompts_file)

    modes = [("plain", [])]
    if args.heads:
        modes.append(("medusa", ["--heads", args.heads] + (["--tree", args.tree] if args.tree else [])))
    else:
        print("bench-server: no --heads given: plain decoding only", file=sys.stderr)

    results = []
    for name, extra in modes:
        options = ["--max-sequences", str(max(levels)), "--ctx", str(args.ctx)] + (["--model", args.model] if args.model else [])
        server = Server(*options, *extra, np=args.np, threads=args.threads, ready_timeout=600)
        try:
            model = server.get("/v1/models")[1]["data"][0]["id"]
            # One request first: the first steps of a new server pay for page faults of the weights.
            run_level(server, model, prompts, 1, 1, min(args.max_tokens, 16))
            for concurrency in levels:
                row = {"mode": name, **run_level(server, model, prompts, concurrency, max(args.requests, concurrency),
                                                 args.max_tokens)}
                # Greedy Medusa decoding must give plain decoding's answers, token for token.
                plain = next((r for r in results if r["mode"] == "plain" and r["concurrency"] == concurrency), None)
                if name != "plain" and plain is not None:
                    row["same_as_plain"] = sum(a == b for a, b in zip(row["texts"], plain["texts"]))
                results.append(row)
                print(f"bench-server: {name} x{concurrency}: {row['tokens_per_second']:.1f} tokens/s", file=sys.stderr)
        finally:
            server.close()

    setup = {"model": model, "ranks": args.np, "threads_per_rank": args.threads, "max_tokens": args.max_tokens,
             "prompts": os.path.relpath(prompts_file), "heads": args.heads}
    if args.json:
        print(json.dumps({"setup": setup, "results": results}, indent=2))
        return
    print(f"model {model}, {args.np} rank(s) x {args.threads} thread(s), greedy, max_tokens {args.max_tokens}, "
          f"MT-Bench first turns ({setup['prompts']})\n")
    print("| decoding | clients | requests | tokens/s | p50 latency (s) | p95 latency (s) | tokens/step | answers as plain |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        per_step = f"{r['mean_tokens_per_step']:.2f}" if r["mean_tokens_per_step"] else "-"
        same = f"{r['same_as_plain']}/{r['requests']}" if "same_as_plain" in r else "-"
        print(f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['tokens_per_second']:.1f} | "
              f"{r['p50_latency_s']:.2f} | {r['p95_latency_s']:.2f} | {per_step} | {same} |")


if __name__ == "__main__":
    main()
