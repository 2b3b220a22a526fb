"""The PyTorch side of the ONNX training comparison: defines a small MLP (its loss inside the
model), a nanoGPT-style GPT and a small ResNet (both trained with meshpipe's added
cross-entropy), exports each with torch.onnx.export (opset 13, no constant folding; batch norm
in training mode), writes fixed training data as .npy arrays named after the model's inputs, and
trains each model in PyTorch for STEPS steps on that data, writing the per-step losses.

Usage: /usr/bin/python3 train_compare.py DIR
Writes, per model NAME: DIR/NAME.onnx, DIR/NAME/<input>.npy, DIR/NAME.losses (one per line) and
one line on stdout: NAME BATCH STEPS OPTIMIZER LR LOSS_KIND (what meshpipe must train it with).
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

STEPS = 20


class MLP(nn.Module):
    """Two hidden layers with exact GELU; forward returns the loss itself."""

    def __init__(self, d=16, h=32, classes=5):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.fc2 = nn.Linear(h, h)
        self.out = nn.Linear(h, classes)

    def forward(self, x, y):
        z = self.out(F.gelu(self.fc2(F.gelu(self.fc1(x)))))
        return F.cross_entropy(z, y)


class Block(nn.Module):
    def __init__(self, d, heads, t):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.heads = heads
        self.scale = 1.0 / math.sqrt(d // heads)
        self.register_buffer("mask", torch.tril(torch.ones(t, t)).view(1, 1, t, t))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.attn(self.ln1(x)).split(c, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        a = (q @ k.transpose(-2, -1)) * self.scale
        a = a.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
        y = (F.softmax(a, dim=-1) @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """nanoGPT's structure: token and position embeddings, pre-LN blocks, tied LM head."""

    def __init__(self, vocab=64, t=16, d=32, heads=4, layers=2):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(t, d)
        self.blocks = nn.ModuleList([Block(d, heads, t) for _ in range(layers)])
        self.lnf = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():  # nanoGPT's initialisation
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        pos = torch.arange(0, idx.shape[1], dtype=torch.long)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.lnf(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """A ResNet-8-like network: stem, max pool, two basic blocks (the second strided with a
    projection shortcut), average pool, linear classifier."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        y = F.max_pool2d(F.relu(self.bn(self.stem(x))), 2)
        y = F.pad(y, (1, 0, 0, 1))  # 8x8 -> 9x9: a Pad whose pads PyTorch reverses with a Slice
        y = self.layer2(self.layer1(y))
        return self.fc(F.avg_pool2d(y, 4).flatten(1))  # 16x16 in: 5x5 here, pooled to 1x1


def save(d, name, array):
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, name + ".npy"), np.ascontiguousarray(array))


def lr_factor(step, warmup, decay, min_ratio):
    """meshpipe's schedule (train/job.h LrSchedule), written from its description: linear
    warm-up over `warmup` steps, cosine decay to min_ratio at step `decay`; step is 1-based."""
    if warmup > 0 and step <= warmup:
        return max(step, 1) / warmup
    if decay <= 0:
        return 1.0
    progress = min(1.0, (step - warmup) / (decay - warmup))
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))


def run(out, name, model, inputs, labels, batch, optimizer, lr, loss_kind, schedule=None,
        weight_decay=0.0, clip=0.0):
    """Exports `model`, writes the data, trains STEPS steps; inputs/labels hold STEPS batches.
    schedule: (warmup, decay, min_ratio) for a LambdaLR; weight_decay: AdamW's (decoupled);
    clip: clip_grad_norm_'s max_norm (its returned norms go to NAME.norms)."""
    names = [n for n, _ in inputs]
    example = tuple(t[:batch] for _, t in inputs)
    extra = {}
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        extra["training"] = torch.onnx.TrainingMode.TRAINING
    model.train()
    torch.onnx.export(model, example, os.path.join(out, name + ".onnx"), opset_version=13,
                      do_constant_folding=False, input_names=names, output_names=["out"],
                      **extra)
    d = os.path.join(out, name)
    for n, t in inputs:
        save(d, n, t.numpy())
    if labels is not None:
        save(d, "labels", labels.numpy())
    params = list(model.parameters())
    opt = (torch.optim.SGD(params, lr=lr) if optimizer == "sgd"
           else torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay))
    sched = None
    if schedule is not None:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it + 1, *schedule))
    losses = []
    norms = []
    for step in range(STEPS):
        rows = slice(step * batch, (step + 1) * batch)
        out_t = model(*[t[rows] for _, t in inputs])
        if loss_kind == "cross-entropy":
            loss = F.cross_entropy(out_t.reshape(-1, out_t.shape[-1]), labels[rows].reshape(-1))
        else:
            loss = out_t
        opt.zero_grad()
        loss.backward()
        if clip > 0:
            norms.append(torch.nn.utils.clip_grad_norm_(params, clip).item())
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    with open(os.path.join(out, name + ".losses"), "w") as f:
        f.write("".join(repr(v) + "\n" for v in losses))
    if clip > 0:
        with open(os.path.join(out, name + ".norms"), "w") as f:
            f.write("".join(repr(v) + "\n" for v in norms))
    extra = f" --weight-decay {weight_decay}" if weight_decay else ""
    if schedule is not None:
        extra += (f" --warmup-steps {schedule[0]} --decay-steps {schedule[1]}"
                  f" --min-lr-ratio {schedule[2]}")
    if clip > 0:
        extra += f" --clip-grad-norm {clip}"
    print(name, batch, STEPS, optimizer, lr, loss_kind + extra)


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    n = 8 * STEPS
    # MLP: features labelled by a random linear teacher; the loss is the model's output.
    x = torch.randn(n, 16)
    y = (x @ torch.randn(16, 5)).argmax(1)
    run(out, "mlp", MLP(), [("x", x), ("y", y)], None, 8, "sgd", 0.1, "output")
    # GPT: token sequences following a fixed successor table with noise; next-token labels.
    succ = torch.randperm(64)
    seq = torch.zeros(n, 17, dtype=torch.long)
    seq[:, 0] = torch.randint(0, 64, (n,))
    for s in range(1, 17):
        keep = torch.rand(n) < 0.8
        seq[:, s] = torch.where(keep, succ[seq[:, s - 1]], torch.randint(0, 64, (n,)))
    run(out, "gpt", GPT(), [("idx", seq[:, :16].contiguous())], seq[:, 1:].contiguous(), 8,
        "adam", 3e-3, "cross-entropy")
    # The same with GPT training's schedule: warm-up over 5 steps, cosine decay to 0.1 at step
    # 16, and AdamW's decoupled weight decay.
    run(out, "gpt_sched", GPT(), [("idx", seq[:, :16].contiguous())], seq[:, 1:].contiguous(), 8,
        "adam", 3e-3, "cross-entropy", schedule=(5, 16, 0.1), weight_decay=0.1)
    # And with global-norm gradient clipping at 0.5 (the norms start near 1.4: every step
    # clips), as nanoGPT trains (clip 1.0 there, for its larger gradients).
    run(out, "gpt_clip", GPT(), [("idx", seq[:, :16].contiguous())], seq[:, 1:].contiguous(), 8,
        "adam", 3e-3, "cross-entropy", schedule=(5, 16, 0.1), weight_decay=0.1, clip=0.5)
    # ResNet: a fixed pattern per class plus noise.
    cls = torch.randint(0, 10, (n,))
    images = torch.randn(10, 3, 16, 16)[cls] + torch.randn(n, 3, 16, 16)
    run(out, "resnet", ResNet(), [("images_in", images)], cls, 8, "sgd", 0.05, "cross-entropy")


if __name__ == "__main__":
    main()
