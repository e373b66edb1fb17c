#!/usr/bin/env python3
"""Medians over several bench/run.sh runs.

    bench/median.py bench/results/A.jsonl bench/results/B.jsonl ... > table.md

Absolute figures: the median of each (scenario, server) figure over the runs.
Ratios: computed inside each run (tusker and the other server measured
minutes apart on the same noisy machine), then the median over the runs, with
the lowest and highest in brackets.
"""
import json
import statistics
import sys

SCENARIOS = [
    ("1-single", "(1) one 1 GiB PATCH"),
    ("2-chunked", "(2) 5 MiB PATCHes"),
    ("3-small", "(3) 64 KiB creation-with-upload x32"),
    ("4-many", "(4) 100 concurrent uploads"),
    ("7-download", "(7) GET of a finished upload x4"),
]
ORDER = ["tusker", "tusker-variant", "tusker-baseline", "tus-node", "rustus", "limit",
         "limit-dontcache", "limit-best"]
# The receivers measured as the limit; "limit-best" is the faster of them
# in each run (older runs have only "limit").
LIMITS = ["limit", "limit-dontcache"]
FIGURES = [
    ("mb_per_s", "MB/s", 0),
    ("uploads_per_s", "uploads/s", 0),
    ("p50_ms", "p50 ms", 1),
    ("p99_ms", "p99 ms", 1),
    ("cpu_s_per_gib", "CPU s/GiB", 2),
    ("peak_rss_mib", "peak RSS MiB", 0),
]


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            v = json.loads(line)
            if "error" in v or "reason" in v:
                continue
            rows[(v.get("scenario"), v.get("server"))] = v
    for sc in {sc for (sc, _) in rows}:
        got = [rows[(sc, l)] for l in LIMITS if isinstance(rows.get((sc, l), {}).get("mb_per_s"), (int, float))]
        if got:
            rows[(sc, "limit-best")] = max(got, key=lambda v: v["mb_per_s"])
    return rows


def fmt(x, digits):
    return "–" if x is None else f"{x:.{digits}f}"


def spread(values, digits=2):
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} [{fmt(min(values), digits)}–{fmt(max(values), digits)}]"


def main(paths):
    runs = [load(p) for p in paths]
    out = [f"Medians over {len(runs)} runs ({', '.join(p.rsplit('/', 1)[-1] for p in paths)}).", ""]
    out.append("| scenario | server | n | " + " | ".join(t for _, t, _ in FIGURES) + " |")
    out.append("|---|---|---:|" + "---:|" * len(FIGURES))
    servers = sorted(
        {s for r in runs for (_, s) in r},
        key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER),
    )
    for sc, title in SCENARIOS:
        for srv in servers:
            got = [r[(sc, srv)] for r in runs if (sc, srv) in r]
            if not got:
                continue
            cells = []
            for key, _, digits in FIGURES:
                vals = [g[key] for g in got if isinstance(g.get(key), (int, float))]
                cells.append(fmt(statistics.median(vals), digits) if vals else "–")
            out.append(f"| {title} | {srv} | {len(got)} | " + " | ".join(cells) + " |")

    def per_run_ratio(sc, a, b, key):
        vals = []
        for r in runs:
            x, y = r.get((sc, a), {}).get(key), r.get((sc, b), {}).get(key)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y > 0:
                vals.append(x / y)
        return vals

    others = [s for s in servers if s not in ("tusker",)]
    out += ["", "Ratios tusker ÷ other, per run, then the median [lowest–highest]:", ""]
    out.append("| scenario | figure | " + " | ".join(f"÷ {s}" for s in others) + " |")
    out.append("|---|---|" + "---:|" * len(others))
    for sc, title in SCENARIOS:
        thr = "uploads_per_s" if sc == "3-small" else "mb_per_s"
        for key, label in [(thr, "throughput"), ("cpu_s_per_gib", "CPU/GiB"), ("peak_rss_mib", "peak RSS")]:
            cells = [spread(per_run_ratio(sc, "tusker", o, key)) for o in others]
            if all(c == "–" for c in cells):
                continue
            out.append(f"| {title} | {label} | " + " | ".join(cells) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
