#!/usr/bin/env python3
"""What the network costs: `medusa-worker bench` on one process, on P ranks of one host, and on 2..N
emulated hosts (scripts/emulated-hosts.sh, one rank each) at several link rates, every group
launched by deploy/bare-metal/launch.sh as in the multi-host tests. Prints one markdown table.

    scripts/bench-hosts.py --model M [--hosts 2,3] [--rates unlimited,10gbit,1gbit]
        [--verify-nodes 1,8] [--out runs.jsonl] -- [bench options: --limit 4 --max-tokens 64 ...]

Default mode: plain decoding of the bench prompts (with --heads in the bench options, Medusa too);
a row per setting with decode speed and, per step, rank 0's time in allreduce, plan broadcasts and
logit gathers, and its payload bytes per token (plus the bytes its host's interface sent, the real
wire traffic, headers included). With --verify-nodes: one verify step of n tokens (bench
--verify-curve) instead, a row per setting and n. Needs root (network namespaces) and the release
build; each rank gets the bench options' --threads (default 1).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
HOSTS_SCRIPT = os.path.join(ROOT, "scripts", "emulated-hosts.sh")
LAUNCH = os.path.join(ROOT, "deploy", "bare-metal", "launch.sh")
BINARY = os.environ.get("MEDUSA_WORKER_BINARY") or os.path.join(ROOT, ".build", "release", "medusa-worker")
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def script(*args):
    return subprocess.run([HOSTS_SCRIPT, *args], check=True, capture_output=True, text=True).stdout.strip()


def run(command, label):
    r = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **MPI_ENV}, timeout=3600)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        sys.exit(f"{label}: exit {r.returncode}\n{r.stderr[-3000:]}")
    return json.loads(lines[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--hosts", default="2,3", help="host counts, one rank per host (default 2,3)")
    p.add_argument("--rates", default="unlimited,10gbit,1gbit", help="link rates (tc syntax) or unlimited")
    p.add_argument("--verify-nodes", help="measure verify steps of these sizes instead of decoding, e.g. 1,8")
    p.add_argument("--out", help="append every run's JSON (with its setting) to this file")
    p.add_argument("--no-local", action="store_true", help="skip the one-process and one-host rows")
    p.add_argument("bench", nargs=argparse.REMAINDER, help="-- then options for medusa-worker bench")
    a = p.parse_args()
    bench = [x for x in a.bench if x != "--"]
    if "--threads" not in bench:
        bench += ["--threads", "1"]
    hosts = [int(x) for x in a.hosts.split(",")]
    rates = a.rates.split(",")
    nodes = [int(x) for x in a.verify_nodes.split(",")] if a.verify_nodes else None
    mode = ["--verify-curve", "--max-nodes", str(max(nodes))] if nodes else []
    command = [BINARY, "bench", "--model", a.model, "--json", *mode, *bench]

    script("check")
    run_name = f"{os.getpid()}-bench"
    script("up", run_name, str(max(hosts)))
    network = script("network")
    folder = tempfile.mkdtemp(prefix="bench-hosts-")
    results = []
    try:
        def launch(count, per_host, label):
            hostfile = os.path.join(folder, f"hosts-{count}")
            with open(hostfile, "w") as f:
                f.write("".join(f"host{i}\n" for i in range(1, count + 1)))
            return run([HOSTS_SCRIPT, "exec", run_name, "1", LAUNCH, "--hostfile", hostfile, "--network", network,
                        "--ranks-per-node", str(per_host), "--rsh-agent", f"{HOSTS_SCRIPT} rsh-agent {run_name}",
                        "--shared-cores", "--", *command], label)

        settings = []
        if not a.no_local:
            settings.append(("one process", lambda: run([HOSTS_SCRIPT, "exec", run_name, "1", *command], "one process")))
            for h in hosts:
                settings.append((f"1 host x {h} ranks", lambda h=h: launch(1, h, f"1 host x {h}")))
        for rate in rates:
            for h in hosts:
                settings.append((f"{h} hosts, {rate}", lambda h=h, rate=rate: (script("rate", run_name, rate),
                                                                                launch(h, 1, f"{h} hosts {rate}"))[1]))
        for label, go in settings:
            print(f"running: {label}", file=sys.stderr, flush=True)
            report = go()
            results.append((label, report))
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps({"setting": label, "command": command, "report": report}) + "\n")
    finally:
        script("down", run_name)

    if nodes:
        print("| setting | ranks | n | step ms | allreduce ms (share) | calls | bcast ms | gather ms | rank 0 sent KB | received KB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, r in results:
            for point in r["curve"]:
                if point["n"] not in nodes:
                    continue
                ms = point["ms"]
                ar = point.get("allreduce_ms") or 0
                print(f"| {label} | {r['ranks']} | {point['n']} | {ms:.2f} | {ar:.2f} ({100 * ar / ms:.0f}%) | "
                      f"{point.get('allreduce_calls') or 0} | {point.get('broadcast_ms') or 0:.2f} | {point.get('gather_ms') or 0:.2f} | "
                      f"{(point.get('sent_bytes') or 0) / 1e3:.1f} | {(point.get('received_bytes') or 0) / 1e3:.1f} |")
        return

    def row(label, r, rate_key, network_key, speed_label):
        rate = r[rate_key]
        net = r.get(network_key) or {}
        steps, tokens = net.get("steps", 0), net.get("tokens", 0)
        ms_token = 1e3 / rate if rate else 0
        ms_step = ms_token * tokens / steps if steps else ms_token
        ar = net.get("allreduce_ms_per_step", 0)
        sent = sum((net.get("sent_bytes_per_token") or {}).values())
        received = sum((net.get("received_bytes_per_token") or {}).values())
        wire = net.get("interface_bytes_sent_per_token")
        print(f"| {label} | {speed_label} | {r['ranks']} | {rate:.1f} | {ms_step:.1f} | {ar:.1f} ({100 * ar / ms_step if ms_step else 0:.0f}%) | "
              f"{net.get('allreduce_calls_per_step', 0):.0f} | {net.get('broadcast_ms_per_step', 0):.2f} | {net.get('gather_ms_per_step', 0):.2f} | "
              f"{sent / 1e3:.1f} | {received / 1e3:.1f} | {'' if wire is None else f'{wire / 1e3:.1f}'} |")

    print("| setting | decoding | ranks | tok/s | ms/step | allreduce ms/step (share) | allreduces/step | plan bcast ms/step | "
          "gather ms/step | rank 0 sent KB/token | received KB/token | interface KB/token |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in results:
        row(label, r, "plain_decode_tokens_per_second", "decode_network", "plain")
        if r.get("medusa_decode_tokens_per_second"):
            row(label, r, "medusa_decode_tokens_per_second", "medusa_network",
                f"Medusa ({r['mean_accepted_tokens']:.2f} tok/step)")


if __name__ == "__main__":
    main()
