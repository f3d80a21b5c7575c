#!/usr/bin/env python3
"""Compares release builds of the load tool on this noisy machine by interleaving them.

    python3 scripts/interleave.py WORKLOAD ROUNDS BIN_A BIN_B [BIN ...] [-- EXTRA ARGS]

Runs `BIN bench --workload WORKLOAD -q EXTRA...` for every binary, ROUNDS times, alternating
the order each round, and prints per binary the median of msgs/s (and of p50/p99 latency where
the workload measures it), then each binary's ratio to the first by medians and by pairs
(the median of the per-round ratios, and in how many rounds it was faster). WORKLOAD may name
the report line to read after a colon, e.g. `W7:W7-consume`.

Copy each build's `target/release/rustmq` elsewhere first (say /tmp/rustmq-before), since
building replaces it.
"""
import json
import statistics
import subprocess
import sys


def run(binary, workload, extra):
    out = subprocess.run(
        [binary, "bench", "--workload", workload, "-q", *extra],
        capture_output=True, text=True, check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        extra = args[args.index("--") + 1:]
        args = args[:args.index("--")]
    if len(args) < 4:
        sys.exit(__doc__)
    workload, _, line = args[0].partition(":")
    line = line or workload
    rounds, binaries = int(args[1]), args[2:]
    results = {b: [] for b in binaries}
    for r in range(rounds):
        for b in binaries if r % 2 == 0 else binaries[::-1]:
            report = next(j for j in run(b, workload, extra) if j["workload"] == line)
            results[b].append(report)
    base = results[binaries[0]]
    for b in binaries:
        rate = [j["msgs_per_s"] for j in results[b]]
        text = f"{b:32} msgs/s {statistics.median(rate):>12,.0f}"
        if "p50_us" in results[b][0]:
            p50 = statistics.median(j["p50_us"] for j in results[b])
            p99 = statistics.median(j["p99_us"] for j in results[b])
            text += f"  p50 {p50} us  p99 {p99} us"
        if b == binaries[0]:
            print(text + "  (the baseline)")
            continue
        pairs = [j["msgs_per_s"] / k["msgs_per_s"] for j, k in zip(results[b], base)]
        text += (
            f"  ratio {statistics.median(rate) / statistics.median(j['msgs_per_s'] for j in base):.3f}"
            f" (pairwise {statistics.median(pairs):.3f}, faster in "
            f"{sum(p > 1 for p in pairs)} of {len(pairs)})"
        )
        print(text)


if __name__ == "__main__":
    main()
