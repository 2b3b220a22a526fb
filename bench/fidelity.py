#!/usr/bin/env python3
"""The cost model held against measured runs (issue 14's fidelity benchmark).

For each model (sizes chosen so that compute, not per-op overhead, dominates a step on CPU
devices) and each plan (the planner's own and the recipes it competes with: data, tensor and
pipeline parallelism, their mixes, ZeRO-2/3, recomputation), on a CPU cluster of virtual devices
in one process:
  - predicted step time: the planner's (`meshpipe plan`, priced with a measured profile of this
    machine, `meshpipe profile`) and the simulator's (`meshpipe simulate`);
  - measured: the median step of `meshpipe train --plan` (the first step left out), with the
    fastest and slowest step as its spread;
  - predicted peak memory per device next to the measured one.
Then the errors (mean absolute, worst), and per model the ranking of the plans by prediction and
by measurement (Spearman), and whether the planner's choice measured fastest.

Usage: bench/fidelity.py [--bin build/bin] [--out bench/results/fidelity.md] [--steps N]
                         [--cluster cpu:2x2] [--models a,b] [--quick]
Writes the Markdown table to --out and prints it.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
BYTES = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}

# model -> global batch, micro-batches of the pipelined plans
MODELS = {
    "gpt-cpu": (16, 4),
    "moe-cpu": (8, 4),
    "wresnet-cpu": (16, 4),
    "mlp-small": (256, 4),
}
# label -> extra `plan` arguments (None: the planner's own search)
PLANS = [
    ("meshpipe (planner)", None),
    ("data parallel (dp 4)", "--grid dp=4,tp=1,pp=1"),
    ("ZeRO-2 (dp 4)", "--grid dp=4,tp=1,pp=1,params=zero2 --zero"),
    ("ZeRO-3 (dp 4)", "--grid dp=4,tp=1,pp=1,params=zero3"),
    ("tensor parallel (tp 4)", "--grid dp=1,tp=4,pp=1"),
    ("dp 2 x tp 2", "--grid dp=2,tp=2,pp=1"),
    ("pipeline (pp 4)", "--grid dp=1,tp=1,pp=4"),
    ("dp 2 x pp 2", "--grid dp=2,tp=1,pp=2"),
    ("pp 4, recompute", "--grid dp=1,tp=1,pp=4 --recompute on"),
]


def seconds(text):
    m = re.match(r"\s*([0-9.eE+-]+)\s*(ns|us|µs|ms|s)\b", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def nbytes(value, unit):
    return float(value) * BYTES[unit]


def run(cmd, timeout=1800):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def spearman(a, b):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0 + 1
            i = j + 1
        return r
    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va > 0 and vb > 0 else float("nan")


def fmt_s(x):
    if x is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x * 1e9:.3g} ns"


def fmt_b(x):
    if x is None:
        return "-"
    return f"{x / 1024 ** 2:.1f} MiB"


def measure_plan(mp, work, model, batch, micro, extra, profile, steps, cluster):
    plan = os.path.join(work, "plan.json")
    if os.path.exists(plan):
        os.remove(plan)
    cmd = [mp, "plan", "--quiet", "--model", model, "--cluster", cluster, "--batch", str(batch),
           "--profile", profile, "-o", plan]
    if extra is None:
        pass
    else:
        cmd += ["--micro-batches", str(micro)] + extra.split()
    rc, out, err = run(cmd)
    if rc != 0:
        return {"error": "plan: " + (err.strip().splitlines() or ["?"])[-1]}
    m = re.search(r"^predicted step time: (.+?),", out, re.M)
    r = {"predicted": seconds(m.group(1)) if m else None}
    desc = re.search(r"^micro-batches: (\d+) x (\d+)", out, re.M)
    r["micro"] = f"{desc.group(1)} x {desc.group(2)}" if desc else "?"
    stages = len(re.findall(r"^\d+\s+\d+-\d+\s+\(", out, re.M))
    r["stages"] = stages
    rc, out, err = run([mp, "simulate", plan])
    m = re.search(r"^simulated step time: (.+?) \(", out, re.M)
    r["simulated"] = seconds(m.group(1)) if m and rc == 0 else None
    rc, out, err = run([mp, "train", "--model", model, "--plan", plan, "--steps", str(steps),
                        "--runner", "threads"])
    if rc != 0:
        r["error"] = "train: " + (err.strip().splitlines() or ["?"])[-1]
        return r
    m = re.search(r"measured median (.+?) over steps .*min (.+?), max (.+?)\)", out)
    if m:
        r["measured"], r["min"], r["max"] = seconds(m.group(1)), seconds(m.group(2)), seconds(m.group(3))
    peaks = re.findall(r"^\d+\s+\d+\s+([0-9.]+) (B|KiB|MiB|GiB)\s+([0-9.]+) (B|KiB|MiB|GiB)\s*$", out, re.M)
    if peaks:
        r["mem_measured"] = max(nbytes(a, b) for a, b, _, _ in peaks)
        r["mem_predicted"] = max(nbytes(c, d) for _, _, c, d in peaks)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--out", default="bench/results/fidelity.md")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--cluster", default="cpu:2x2")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--quick", action="store_true", help="a quick profile, 4 steps")
    args = ap.parse_args()
    mp = os.path.join(args.bin, "meshpipe")
    steps = 4 if args.quick else args.steps
    work = tempfile.mkdtemp(prefix="bench_fidelity_")
    profile = os.path.join(work, "profile.json")
    print(f"profiling {args.cluster} ...", file=sys.stderr)
    cmd = [mp, "profile", "--quiet", "--cluster", args.cluster, "-o", profile]
    if args.quick:
        cmd.append("--quick")
    rc, out, err = run(cmd)
    if rc != 0:
        sys.exit("profile failed: " + err)
    source = json.load(open(profile)).get("source", "")
    load0 = open("/proc/loadavg").read().split()[:3]
    rows = []
    for model in args.models.split(","):
        batch, micro = MODELS[model]
        for label, extra in PLANS:
            print(f"{model}: {label} ...", file=sys.stderr)
            r = measure_plan(mp, work, model, batch, micro, extra, profile, steps, args.cluster)
            r.update(model=model, plan=label)
            rows.append(r)
    load1 = open("/proc/loadavg").read().split()[:3]

    def err(p, m):
        return (p - m) / m if p is not None and m else None

    lines = []
    lines.append("# Fidelity: predicted step time and memory against measured runs")
    lines.append("")
    lines.append(f"Machine: {source}. Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC. "
                 f"Load average before / after: {' '.join(load0)} / {' '.join(load1)}.")
    lines.append(f"Cluster {args.cluster} (virtual CPU devices, threads of one process, "
                 f"in-process collectives and transport), priced with a profile of this machine "
                 f"(`meshpipe profile{' --quick' if args.quick else ''}`). Measured: median of "
                 f"steps 2-{steps} of `meshpipe train --plan --runner threads` (spread: fastest "
                 f"and slowest step). Error = (predicted - measured) / measured. Produced by "
                 f"`bench/fidelity.py`.")
    lines.append("")
    lines.append("| model | plan | micro-batches | stages | planner | simulator | measured (min-max) "
                 "| planner error | simulator error | memory predicted / measured |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    errors, sim_errors, mem_ratios = [], [], []
    for r in rows:
        if "error" in r and "measured" not in r:
            lines.append(f"| {r['model']} | {r['plan']} | | | | | {r['error']} | | | |")
            continue
        e = err(r.get("predicted"), r.get("measured"))
        se = err(r.get("simulated"), r.get("measured"))
        if e is not None:
            errors.append(abs(e))
        if se is not None:
            sim_errors.append(abs(se))
        mr = None
        if r.get("mem_measured"):
            mr = r["mem_predicted"] / r["mem_measured"]
            mem_ratios.append(mr)
        lines.append(
            f"| {r['model']} | {r['plan']} | {r.get('micro', '')} | {r.get('stages', '')} "
            f"| {fmt_s(r.get('predicted'))} | {fmt_s(r.get('simulated'))} "
            f"| {fmt_s(r.get('measured'))} ({fmt_s(r.get('min'))}-{fmt_s(r.get('max'))}) "
            f"| {'-' if e is None else f'{100 * e:+.0f}%'} | {'-' if se is None else f'{100 * se:+.0f}%'} "
            f"| {fmt_b(r.get('mem_predicted'))} / {fmt_b(r.get('mem_measured'))}"
            f"{'' if mr is None else f' ({mr:.2f})'} |")
    lines.append("")
    if errors:
        lines.append(f"Planner: mean absolute error {100 * sum(errors) / len(errors):.0f}%, worst "
                     f"{100 * max(errors):.0f}%, {sum(1 for x in errors if x <= 0.2)} of "
                     f"{len(errors)} plans within 20%.")
    if sim_errors:
        lines.append(f"Simulator: mean absolute error {100 * sum(sim_errors) / len(sim_errors):.0f}%, "
                     f"worst {100 * max(sim_errors):.0f}%.")
    if mem_ratios:
        lines.append(f"Memory: predicted / measured peak from {min(mem_ratios):.2f} to "
                     f"{max(mem_ratios):.2f} ({sum(1 for x in mem_ratios if x < 1)} under).")
    lines.append("")
    lines.append("| model | Spearman (planner vs measured) | planner's choice | measured fastest |")
    lines.append("|---|---|---|---|")
    for model in args.models.split(","):
        ok = [r for r in rows if r["model"] == model and r.get("measured") and r.get("predicted")]
        if not ok:
            continue
        rho = spearman([r["predicted"] for r in ok], [r["measured"] for r in ok])
        mine = next((r for r in ok if r["plan"].startswith("meshpipe")), None)
        fastest = min(ok, key=lambda r: r["measured"])
        choice = f"{fmt_s(mine['measured'])}" if mine else "-"
        lines.append(f"| {model} | {rho:.2f} | {choice} | {fastest['plan']} {fmt_s(fastest['measured'])} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
