#!/usr/bin/env python3
"""The cost model held against measured runs (issue 14's fidelity benchmark).

For each model (sizes chosen so that compute, not per-op overhead, dominates a step on CPU
devices) and each plan (the planner's own and the recipes it competes with: data, tensor and
pipeline parallelism, their mixes, ZeRO-2/3, recomputation), on N virtual CPU devices (--devices,
default one per core: devices sharing cores run by the OS scheduler's interleaving, which no
cost model here predicts) run two ways:
  - 1 process: `meshpipe train --plan` on cpu:1xN, the devices as threads (in-process
    collectives and transport), priced with `meshpipe profile` of that setting;
  - 2 processes: `scripts/launch-local.sh 2 N/2 -- --plan` on cpu:2x(N/2) (a driver and 2
    `meshpipe-node`s, each pinned to its share of the cores; UCX collectives and transfers),
    priced with `meshpipe profile --collectives ucx --transport ucx`;
it records
  - predicted step time: the planner's (`meshpipe plan --profile`) and the simulator's
    (`meshpipe simulate`);
  - measured: the median step of each run (the first step left out), each plan run --repeats
    times (runs interleaved over the plans, so that drift on a shared machine hits all); the
    spread is the fastest and slowest run median;
  - memory: the predicted peak per device next to the runtime's measured pool peak, and (1
    process) the process's peak resident memory next to the sum of the predicted device peaks.
Then the errors (mean absolute, worst), and per model and mode the ranking of the plans by
prediction and by measurement (Spearman), and whether the planner's choice measures at least as
fast as every plan it predicted slower (within the measured spread).

Usage: bench/fidelity.sh [--bin build/bin] [--out bench/results/fidelity.md] [--steps N]
                         [--repeats R] [--modes 1,2] [--models a,b] [--devices N] [--quick]
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
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
BYTES = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}

# model -> global batch, micro-batches of the pipelined plans
MODELS = {
    "gpt-cpu": (16, 4),
    "moe-cpu": (8, 4),
    "wresnet-cpu": (16, 4),
    "mlp-small": (256, 4),
}
def plans_for(n):
    """label -> extra `plan` arguments (None: the planner's own search), for n devices."""
    half = n // 2
    plans = [
        ("meshpipe (planner)", None),
        (f"data parallel (dp {n})", f"--grid dp={n},tp=1,pp=1"),
        (f"ZeRO-2 (dp {n})", f"--grid dp={n},tp=1,pp=1,params=zero2 --zero"),
        (f"ZeRO-3 (dp {n})", f"--grid dp={n},tp=1,pp=1,params=zero3"),
        (f"tensor parallel (tp {n})", f"--grid dp=1,tp={n},pp=1"),
    ]
    if n >= 4:
        plans.append((f"dp 2 x tp {half}", f"--grid dp=2,tp={half},pp=1"))
    plans.append((f"pipeline (pp {n})", f"--grid dp=1,tp=1,pp={n}"))
    if n >= 4:
        plans.append((f"dp 2 x pp {half}", f"--grid dp=2,tp=1,pp={half}"))
    plans.append((f"pp {n}, recompute", f"--grid dp=1,tp=1,pp={n} --recompute on"))
    plans.append((f"dp {n}, recompute", f"--grid dp={n},tp=1,pp=1 --recompute on"))
    return plans


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


def make_plan(mp, work, tag, model, batch, micro, extra, profile, cluster):
    """Plans one row and simulates it; the plan file's path in r["plan"]."""
    plan = os.path.join(work, f"plan-{tag}.json")
    if os.path.exists(plan):
        os.remove(plan)
    cmd = [mp, "plan", "--quiet", "--model", model, "--cluster", cluster, "--batch", str(batch),
           "--profile", profile, "-o", plan]
    if extra is not None:
        cmd += ["--micro-batches", str(micro)] + extra.split()
    rc, out, err = run(cmd)
    if rc != 0:
        return {"error": "plan: " + (err.strip().splitlines() or ["?"])[-1]}
    m = re.search(r"^predicted step time: (.+?),", out, re.M)
    r = {"predicted": seconds(m.group(1)) if m else None, "plan": plan, "runs": []}
    desc = re.search(r"^micro-batches: (\d+) x (\d+)", out, re.M)
    r["micro"] = f"{desc.group(1)} x {desc.group(2)}" if desc else "?"
    r["stages"] = len(re.findall(r"^\d+\s+\d+-\d+\s+\(", out, re.M))
    rc, out, err = run([mp, "simulate", plan])
    m = re.search(r"^simulated step time: (.+?) \(", out, re.M)
    r["simulated"] = seconds(m.group(1)) if m and rc == 0 else None
    return r


def train_once(args, mode, model, plan, steps, per_node):
    """One measured run: the median step and its spread, the device peaks, the process RSS."""
    mp = os.path.join(args.bin, "meshpipe")
    env = dict(os.environ)
    if mode == 1:
        cmd = ["/usr/bin/time", "-f", "max-rss-kib %M", mp, "train", "--model", model, "--plan",
               plan, "--steps", str(steps), "--runner", "threads"]
    else:
        env["MESHPIPE_BIN"] = os.path.abspath(args.bin)
        cmd = [os.path.join(REPO, "scripts", "launch-local.sh"), "2", str(per_node), "--",
               "--model", model,
               "--plan", plan, "--steps", str(steps)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    out = p.stdout
    if p.returncode != 0:
        lines = (p.stderr + out).strip().splitlines() or ["?"]
        why = [x for x in lines if "error" in x or "failed" in x or "timed out" in x]
        return {"error": "train: " + (why or lines)[-1].strip()}
    r = {}
    m = re.search(r"measured median (.+?) over steps .*min (.+?), max (.+?)\)", out)
    if not m:
        return {"error": "train: no timing line"}
    r["median"], r["min"], r["max"] = seconds(m.group(1)), seconds(m.group(2)), seconds(m.group(3))
    peaks = re.findall(r"^\d+\s+\d+\s+([0-9.]+) (B|KiB|MiB|GiB)\s+([0-9.]+) (B|KiB|MiB|GiB)\s*$",
                       out, re.M)
    if peaks:
        r["mem_measured"] = max(nbytes(a, b) for a, b, _, _ in peaks)
        r["mem_predicted"] = max(nbytes(c, d) for _, _, c, d in peaks)
        r["mem_predicted_sum"] = sum(nbytes(c, d) for _, _, c, d in peaks)
    m = re.search(r"max-rss-kib (\d+)", p.stderr)
    if m:
        r["rss"] = int(m.group(1)) * 1024
    return r


MODES = {
    1: ("1 process", "threads, in-process collectives and transport", []),
    2: ("2 processes", "2 x `meshpipe-node`, UCX collectives and transfers",
        ["--collectives", "ucx", "--transport", "ucx"]),
}


def cluster_of(mode, n):
    """1 process: one host of n devices; 2 processes: 2 hosts (nodes) of n / 2 devices."""
    return f"cpu:1x{n}" if mode == 1 else f"cpu:2x{n // 2}"


def default_devices():
    """One device per core (up to 4, an even number, at least 2): devices sharing cores run
    their threads by the OS scheduler's interleaving, which no cost model here predicts."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, min(4, (cores or 2) // 2 * 2))


def summarize(r):
    runs = [x for x in r.get("runs", []) if "median" in x]
    if not runs:
        return
    medians = sorted(x["median"] for x in runs)
    n = len(medians)
    r["measured"] = medians[n // 2] if n % 2 else 0.5 * (medians[n // 2 - 1] + medians[n // 2])
    r["run_min"], r["run_max"] = medians[0], medians[-1]
    r["step_min"] = min(x["min"] for x in runs)
    r["step_max"] = max(x["max"] for x in runs)
    for k in ("mem_measured", "mem_predicted", "mem_predicted_sum"):
        vals = [x[k] for x in runs if k in x]
        if vals:
            r[k] = max(vals)
    rss = [x["rss"] for x in runs if "rss" in x]
    if rss:
        r["rss"] = max(rss)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--out", default="bench/results/fidelity.md")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--modes", default="1,2", help="1: one process, 2: two processes")
    ap.add_argument("--devices", type=int, default=default_devices(),
                    help="virtual devices (even): cpu:1xN in 1 process, cpu:2x(N/2) in 2; "
                         "default one per core, 2 to 4")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--quick", action="store_true", help="a quick profile, 4 steps, 1 repeat")
    args = ap.parse_args()
    mp = os.path.join(args.bin, "meshpipe")
    steps = 4 if args.quick else args.steps
    repeats = 1 if args.quick else args.repeats
    modes = [int(x) for x in args.modes.split(",")]
    n = args.devices
    if n < 2 or n % 2:
        sys.exit("--devices must be an even number, at least 2")
    plans = plans_for(n)
    models = args.models.split(",")
    work = tempfile.mkdtemp(prefix="bench_fidelity_")
    load0 = open("/proc/loadavg").read().split()[:3]
    started = time.time()
    rows = []
    sources = {}
    for mode in modes:
        name, _, flags = MODES[mode]
        profile = os.path.join(work, f"profile-{mode}.json")
        cluster = cluster_of(mode, n)
        print(f"[{name}] profiling {cluster} ...", file=sys.stderr)
        cmd = [mp, "profile", "--quiet", "--cluster", cluster, "-o", profile] + flags
        if args.quick:
            cmd.append("--quick")
        rc, out, err = run(cmd)
        if rc != 0:
            sys.exit("profile failed: " + err)
        sources[mode] = json.load(open(profile)).get("source", "")
        mine = []
        for model in models:
            batch, micro = MODELS[model]
            for i, (label, extra) in enumerate(plans):
                print(f"[{name}] plan {model}: {label} ...", file=sys.stderr)
                r = make_plan(mp, work, f"{mode}-{model}-{i}", model, batch, micro, extra, profile,
                              cluster)
                r.update(mode=mode, model=model, label=label)
                mine.append(r)
        for rep in range(repeats):
            for r in mine:
                if "plan" not in r:
                    continue
                print(f"[{name}] run {rep + 1}/{repeats} {r['model']}: {r['label']} ...",
                      file=sys.stderr)
                x = train_once(args, mode, r["model"], r["plan"], steps, n // 2)
                if "error" in x:
                    r["error"] = x["error"]
                r["runs"].append(x)
        for r in mine:
            summarize(r)
        rows += mine
    load1 = open("/proc/loadavg").read().split()[:3]
    minutes = (time.time() - started) / 60

    def err(p, m):
        return (p - m) / m if p is not None and m else None

    lines = []
    lines.append("# Fidelity: predicted step time and memory against measured runs")
    lines.append("")
    lines.append(f"Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {minutes:.0f} minutes. "
                 f"Load average before / after: {' '.join(load0)} / {' '.join(load1)}.")
    for mode in modes:
        lines.append(f"- {MODES[mode][0]} (cluster {cluster_of(mode, n)}; {MODES[mode][1]}): "
                     f"profile `{sources[mode]}`.")
    lines.append("")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines.append(f"{n} virtual CPU devices on this machine's {cores} cores (2 processes: each "
                 f"`meshpipe-node` pinned to its share of the cores by `scripts/launch-local.sh`, "
                 f"as a host of its own). Each "
                 f"plan priced with a profile of this machine in the same setting (`meshpipe "
                 f"profile{' --quick' if args.quick else ''}`), then run {repeats} time(s) for "
                 f"{steps} steps (`meshpipe train --plan`; runs interleaved over the plans). "
                 f"Measured: the median of the runs' median steps (the first step left out); "
                 f"runs: the fastest and slowest run median; steps: the fastest and slowest step. "
                 f"Error = (predicted - measured) / measured. Memory: the largest predicted peak "
                 f"of a device / the runtime's measured pool peak of that device; RSS: the "
                 f"process's peak resident memory (1 process: all {n} devices, the program, its "
                 f"libraries) next to the sum of the predicted device peaks. Produced by "
                 f"`bench/fidelity.sh`.")
    lines.append("")
    lines.append("| mode | model | plan | micro-batches | stages | planner | simulator | measured "
                 "(runs; steps) | planner error | simulator error | memory predicted / measured "
                 "| RSS / predicted sum |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    stats = {}
    for r in rows:
        mode_name = MODES[r["mode"]][0]
        if "measured" not in r:
            lines.append(f"| {mode_name} | {r['model']} | {r['label']} | | | | | "
                         f"{r.get('error', '?')} | | | | |")
            continue
        e = err(r.get("predicted"), r.get("measured"))
        se = err(r.get("simulated"), r.get("measured"))
        st = stats.setdefault(r["mode"], {"e": [], "se": [], "mem": []})
        if e is not None:
            st["e"].append(abs(e))
        if se is not None:
            st["se"].append(abs(se))
        mr = None
        if r.get("mem_measured"):
            mr = r["mem_predicted"] / r["mem_measured"]
            st["mem"].append(mr)
        rss = ""
        if r.get("rss") and r.get("mem_predicted_sum"):
            rss = f"{fmt_b(r['rss'])} / {fmt_b(r['mem_predicted_sum'])}"
        lines.append(
            f"| {mode_name} | {r['model']} | {r['label']} | {r.get('micro', '')} "
            f"| {r.get('stages', '')} | {fmt_s(r.get('predicted'))} | {fmt_s(r.get('simulated'))} "
            f"| {fmt_s(r['measured'])} ({fmt_s(r['run_min'])}-{fmt_s(r['run_max'])}; "
            f"{fmt_s(r['step_min'])}-{fmt_s(r['step_max'])}) "
            f"| {'-' if e is None else f'{100 * e:+.0f}%'} "
            f"| {'-' if se is None else f'{100 * se:+.0f}%'} "
            f"| {fmt_b(r.get('mem_predicted'))} / {fmt_b(r.get('mem_measured'))}"
            f"{'' if mr is None else f' ({mr:.2f})'} | {rss} |")
    lines.append("")
    for mode in modes:
        st = stats.get(mode)
        if not st or not st["e"]:
            continue
        e, se, mem = st["e"], st["se"], st["mem"]
        lines.append(f"- {MODES[mode][0]}: planner mean absolute error {100 * sum(e) / len(e):.0f}%, "
                     f"worst {100 * max(e):.0f}%, {sum(1 for x in e if x <= 0.2)} of {len(e)} "
                     f"plans within 20%; simulator mean absolute error "
                     f"{100 * sum(se) / max(1, len(se)):.0f}%, worst "
                     f"{100 * max(se or [0]):.0f}%, {sum(1 for x in se if x <= 0.2)} within 20%; "
                     f"memory predicted / measured peak {min(mem or [0]):.2f}-{max(mem or [0]):.2f} "
                     f"({sum(1 for x in mem if x < 1)} under).")
    lines.append("")
    lines.append("| mode | model | Spearman (planner vs measured) | planner's choice (measured) "
                 "| measured fastest | plans predicted slower that measured faster |")
    lines.append("|---|---|---|---|---|---|")
    for mode in modes:
        for model in models:
            ok = [r for r in rows if r["mode"] == mode and r["model"] == model
                  and r.get("measured") and r.get("predicted")]
            if not ok:
                continue
            rho = spearman([r["predicted"] for r in ok], [r["measured"] for r in ok])
            mine = next((r for r in ok if r["label"].startswith("meshpipe")), None)
            fastest = min(ok, key=lambda r: r["measured"])
            beaten = []
            if mine:
                for r in ok:
                    # Predicted slower than the choice, yet faster beyond the measured spread:
                    # even the choice's fastest run is slower than that plan's slowest.
                    if r is not mine and r["predicted"] > mine["predicted"] and \
                            mine["run_min"] > r["run_max"]:
                        beaten.append(f"{r['label']} ({fmt_s(r['measured'])})")
            lines.append(f"| {MODES[mode][0]} | {model} | {rho:.2f} "
                         f"| {fmt_s(mine['measured']) if mine else '-'} "
                         f"| {fastest['label']} {fmt_s(fastest['measured'])} "
                         f"| {', '.join(beaten) if beaten else 'none'} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
