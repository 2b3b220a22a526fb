#!/usr/bin/env python3
"""The reference for issue 15's GPU targets, run on the lent GPU machine by scripts/gpu-check.sh:
one GPT layer's forward + backward in bf16 through PyTorch (eager and torch.compile), and the
bf16 GEMM rate of the same run, as TFLOP/s of model FLOPs.

A GPT layer (pre-norm, causal self-attention, GELU MLP of 4h) at hidden h, heads a, sequence s,
batch b: forward FLOPs 24 b s h^2 + 4 b s^2 h (the matrix products; Megatron's count), backward
twice that: the convention bench_gpu_layer (bench/gpu_layer.cc) uses for its model FLOPs, so
their TFLOP/s compare directly. The step here has no optimizer and keeps bf16 weights;
bench_gpu_layer's also updates f32 master weights with Adam. Each configuration: 3 warm-up
steps, then the median of 20 steps timed with CUDA events. Prints a Markdown table, row by row;
--out writes it too, rewritten after each row, so a run stopped by a time limit keeps its rows.

  python3 bench/gpu_torch_layer.py [--out FILE] [--quick] [--seq N]
"""
import argparse
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = [  # name, hidden, heads, seq, batch (GPT-125M / 1.3B / 2.6B layers, Alpa's shapes)
    ("gpt-125m layer", 768, 12, 1024, 16),
    ("gpt-1.3b layer", 2048, 32, 1024, 8),
    ("gpt-2.6b layer", 2560, 32, 1024, 8),
]


class Layer(nn.Module):
    def __init__(self, h, a):
        super().__init__()
        self.a = a
        self.ln1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.out = nn.Linear(h, h)
        self.ln2 = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, 4 * h)
        self.fc2 = nn.Linear(4 * h, h)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=-1)
        q, k, v = (t.view(b, s, self.a, h // self.a).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, s, h))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


def time_ms(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seq", type=int, help="sequence length of every layer (default 1024)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device")
    torch.manual_seed(0)
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    lines = []

    def emit(line):
        lines.append(line)
        print(line, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write("\n".join(lines) + "\n")

    emit(f"PyTorch {torch.__version__} on {name}, bf16, median of 20 steps after 3 warm-ups; model "
         "FLOPs 3 (24 b s h^2 + 4 b s^2 h) per layer (forward + backward, no optimizer).")
    emit("")
    emit("| what | shape | ms | TFLOP/s |")
    emit("|---|---|---|---|")
    n = 4096 if args.quick else 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    ms = time_ms(lambda: a @ b)
    emit(f"| GEMM (torch.matmul, cuBLAS) | {n}^3 | {ms:.3f} | {2 * n ** 3 / ms / 1e9:.0f} |")
    del a, b
    for label, h, heads, s, batch in CONFIGS[:2] if args.quick else CONFIGS:
        s = args.seq or s
        layer = Layer(h, heads).to(dev, torch.bfloat16)
        x = torch.randn(batch, s, h, device=dev, dtype=torch.bfloat16, requires_grad=True)
        flops = 3 * (24 * batch * s * h * h + 4 * batch * s * s * h)
        for mode in ("eager", "torch.compile"):
            fn = layer if mode == "eager" else torch.compile(layer)

            def step():
                y = fn(x)
                y.float().sum().backward()
            try:
                ms = time_ms(step)
            except Exception as e:  # compile may be unavailable; say so and go on
                emit(f"| {label}, {mode} | b{batch} s{s} h{h} | failed: {type(e).__name__} | |")
                continue
            emit(f"| {label} fwd+bwd, {mode} | b{batch} s{s} h{h} | {ms:.3f} | "
                 f"{flops / ms / 1e9:.0f} |")


if __name__ == "__main__":
    main()
