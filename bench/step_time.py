"""GPT training-step time: meshpipe (bench_step_time) against PyTorch CPU, in one script.

Both train the same post-LN GPT (tests/oracle/torch_models.py mirrors meshpipe's graph) with Adam,
f32, on the same thread count. The two are measured alternately (torch, meshpipe, torch,
meshpipe, ...) so that drift on a shared machine hits both; each round reports the median of its
timed steps, and the best round of each side is compared. Writes bench/results/step_time.md.

Run with Debian's interpreter (it has python3-torch):
    /usr/bin/python3 bench/step_time.py [--binary build/bin/bench_step_time]
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "oracle"))

import torch  # noqa: E402

import torch_models  # noqa: E402

TARGET_RATIO = 1.5  # meshpipe step time / PyTorch step time must not exceed this


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", default="build/bin/bench_step_time",
                   help="bench_step_time executable (relative paths are from the repo root)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternations of torch and meshpipe")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--ffn-mult", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--out", default="bench/results/step_time.md",
                   help="markdown results (relative to the repo root); '' to skip writing")
    return p.parse_args()


# ---------------------------------------------------------------- PyTorch side

def init_params(cfg, seed=0):
    """meshpipe's InitSpecs: normal(0.02) for matrices and embeddings, ones for layer-norm gammas,
    zeros for biases and betas."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in torch_models.gpt_param_shapes(cfg).items():
        if len(shape) >= 2:
            t = torch.empty(shape).normal_(0.0, 0.02, generator=g)
        elif name.endswith("gamma"):
            t = torch.ones(shape)
        else:
            t = torch.zeros(shape)
        params[name] = t.float().requires_grad_(True)
    return params


def torch_round(cfg, args, params, opt, profile=False):
    """Warm-up then timed steps of forward + backward + Adam; returns per-step seconds."""
    gen = torch.Generator().manual_seed(1)

    def batch():
        shape = (args.batch, args.seq)
        return (torch.randint(args.vocab, shape, generator=gen, dtype=torch.int32),
                torch.randint(args.vocab, shape, generator=gen, dtype=torch.int32))

    def step(tokens, labels):
        opt.zero_grad(set_to_none=True)
        loss = torch_models.gpt_loss(params, cfg, tokens, labels)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step(*batch())
    times = []
    for _ in range(args.steps):
        tokens, labels = batch()
        t0 = time.perf_counter()
        step(tokens, labels)
        times.append(time.perf_counter() - t0)
    prof = None
    if profile:
        tokens, labels = batch()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step(tokens, labels)
    return times, prof


def torch_breakdown(prof, top=12):
    """(name, self seconds, share) of the ops with the most self CPU time in one step."""
    rows = [(e.key, e.self_cpu_time_total * 1e-6) for e in prof.key_averages()]
    rows = [r for r in rows if r[1] > 0]
    total = sum(r[1] for r in rows)
    rows.sort(key=lambda r: -r[1])
    return [(k, s, s / total) for k, s in rows[:top]], total


# ---------------------------------------------------------------- meshpipe side

def meshpipe_round(args, binary, profile):
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [binary, "--hidden", args.hidden, "--layers", args.layers, "--heads", args.heads,
           "--seq", args.seq, "--batch", args.batch, "--vocab", args.vocab,
           "--ffn-mult", args.ffn_mult, "--lr", args.lr, "--warmup", args.warmup,
           "--steps", args.steps, "--profile-steps", 3 if profile else 0]
    out = subprocess.run([str(c) for c in cmd], env=env, check=True, capture_output=True,
                         text=True).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


# ---------------------------------------------------------------- report

def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    lscpu_family = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fam = [ln.split(":", 1)[1].strip() for ln in out.splitlines()
               if ln.startswith(("CPU family", "Model:"))]
        if fam:
            lscpu_family = f" (family {fam[0]}, model {fam[1]})" if len(fam) > 1 else ""
    except OSError:
        pass
    return f"{model}{lscpu_family}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def fmt_s(x):
    return f"{x * 1e3:.0f} ms" if x < 10 else f"{x:.2f} s"


def report(args, cfg, torch_rounds, mp_runs, tprof, load_before, load_after):
    tokens = args.batch * args.seq
    t_meds = [statistics.median(r) for r in torch_rounds]
    m_meds = [r["median_s"] for r in mp_runs]
    t_best, m_best = min(t_meds), min(m_meds)
    ratio = m_best / t_best
    met = ratio <= TARGET_RATIO
    mp = mp_runs[-1]
    flops = mp["fwd_bwd_flops"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    env_notes = ", ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ)
                          if k.startswith("OPENBLAS_") and k != "OPENBLAS_NUM_THREADS")
    md = []
    md.append("# GPT training step: meshpipe vs PyTorch (CPU)\n")
    md.append("| machine | date | threads | torch | BLAS env | load avg (1 min) before / after |")
    md.append("|---|---|---|---|---|---|")
    md.append(f"| {machine()} | {now} | {args.threads} (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, "
              f"torch.set_num_threads) | {torch.__version__} | {env_notes or '-'} | "
              f"{load_before:.2f} / {load_after:.2f} |\n")
    md.append(f"Config: GPT hidden {cfg['hidden']}, {cfg['layers']} layers, {cfg['heads']} heads, "
              f"seq {cfg['seq_len']}, batch {args.batch}, vocab {cfg['vocab']}, "
              f"ffn x{cfg['ffn_mult']} ({mp['parameters'] / 1e6:.1f} M parameters), f32, "
              f"Adam lr {args.lr:g}; {args.warmup} warm-up + {args.steps} timed steps per round, "
              f"{args.rounds} rounds alternating PyTorch and meshpipe. A step is forward + "
              f"backward + optimizer update; {flops / 1e9:.1f} GFLOP forward+backward "
              f"(graph::graph_cost). Step time = the best round's median.\n")
    md.append("| | step time (median) | per-round medians | min step | tokens/s | GFLOP/s "
              "| peak memory |")
    md.append("|---|---|---|---|---|---|---|")
    t_min = min(min(r) for r in torch_rounds)
    md.append(f"| PyTorch {torch.__version__} | **{fmt_s(t_best)}** | "
              f"{', '.join(fmt_s(x) for x in t_meds)} | {fmt_s(t_min)} | {tokens / t_best:.0f} | "
              f"{flops / t_best / 1e9:.1f} | - |")
    md.append(f"| meshpipe | **{fmt_s(m_best)}** | {', '.join(fmt_s(x) for x in m_meds)} | "
              f"{fmt_s(min(r['min_s'] for r in mp_runs))} | {tokens / m_best:.0f} | "
              f"{flops / m_best / 1e9:.1f} | {mp['peak_bytes'] / 2**20:.0f} MiB |\n")
    md.append("| ratio meshpipe / PyTorch | target | met |")
    md.append("|---|---|---|")
    md.append(f"| **{ratio:.2f}** | <= {TARGET_RATIO} | {'yes' if met else '**no**'} |\n")

    md.append(f"## meshpipe time per op kind (profiled run, {mp['profiled_step_s']:.2f} s/step)\n")
    md.append("| op kind | ops | s / step | share | GFLOP | GFLOP/s | GB/s |")
    md.append("|---|---|---|---|---|---|---|")
    for row in mp["breakdown"]:
        if "ops" in row:
            md.append(f"| {row['kind']} | {row['ops']} | {row['seconds']:.3f} | "
                      f"{row['share'] * 100:.1f}% | {row['gflop']:.2f} | "
                      f"{row['gflop_per_s']:.1f} | {row['gbyte_per_s']:.2f} |")
        else:
            md.append(f"| {row['kind']} | | {row['seconds']:.3f} | {row['share'] * 100:.1f}% "
                      f"| | | |")
    if tprof is not None:
        rows, total = tprof
        md.append(f"\n## PyTorch self CPU time per op (torch.profiler, one step, "
                  f"{total:.2f} s profiled)\n")
        md.append("| op | s / step | share |")
        md.append("|---|---|---|")
        for k, s, share in rows:
            md.append(f"| {k} | {s:.3f} | {share * 100:.1f}% |")
    cmd = " ".join(["/usr/bin/python3", "bench/step_time.py"] + sys.argv[1:])
    md.append(f"\nProduced by `{cmd}` from the repository root (see bench/README.md).")
    return "\n".join(md) + "\n", ratio


def main():
    args = parse_args()
    binary = args.binary if os.path.isabs(args.binary) else os.path.join(REPO, args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"step_time.py: {binary} is not an executable; build bench_step_time first")
    cfg = {"seq_len": args.seq, "hidden": args.hidden, "layers": args.layers,
           "heads": args.heads, "vocab": args.vocab, "ffn_mult": args.ffn_mult}
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params = init_params(cfg)
    opt = torch.optim.Adam(params.values(), lr=args.lr)

    load_before = os.getloadavg()[0]
    torch_rounds, mp_runs, tprof = [], [], None
    for r in range(args.rounds):
        last = r == args.rounds - 1
        times, prof = torch_round(cfg, args, params, opt, profile=last)
        torch_rounds.append(times)
        if prof is not None:
            tprof = torch_breakdown(prof)
        print(f"round {r + 1}: PyTorch median {statistics.median(times):.3f} s", flush=True)
        mp_runs.append(meshpipe_round(args, binary, profile=last))
        print(f"round {r + 1}: meshpipe median {mp_runs[-1]['median_s']:.3f} s", flush=True)
    load_after = os.getloadavg()[0]

    md, ratio = report(args, cfg, torch_rounds, mp_runs, tprof, load_before, load_after)
    print(md)
    if args.out:
        out = args.out if os.path.isabs(args.out) else os.path.join(REPO, args.out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            f.write(md)
        print(f"wrote {out}")
    return 0 if math.isfinite(ratio) else 1


if __name__ == "__main__":
    sys.exit(main())
