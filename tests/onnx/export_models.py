"""Exports the models of the ONNX tests with PyTorch (torch.onnx.export, opset 13) into DIR and
prints one line per model: name, PyTorch's parameter count (unique tensors: a tied weight counts
once; buffers do not count), and the loss meshpipe should train it with.
Usage: /usr/bin/python3 export_models.py DIR"""
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


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
        self.register_buffer("mask", torch.tril(torch.ones(t, t)).view(1, 1, t, t))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.attn(self.ln1(x)).split(c, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        a = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
        a = a.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
        y = (F.softmax(a, dim=-1) @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab=64, t=16, d=32, heads=4, layers=2):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(t, d)
        self.blocks = nn.ModuleList([Block(d, heads, t) for _ in range(layers)])
        self.lnf = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx):
        pos = torch.arange(0, idx.shape[1], dtype=torch.long)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.lnf(x))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = F.max_pool2d(torch.relu(self.bn(self.c(x))), 2)
        y = torch.relu(self.bn2(self.c2(y)) + y)
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    models = [
        ("gpt", GPT(), torch.randint(0, 64, (2, 16)), {}),
        ("mlp", nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)), torch.randn(2, 8), {}),
        ("cnn", CNN().train(), torch.randn(2, 3, 8, 8), {"training": torch.onnx.TrainingMode.TRAINING}),
    ]
    for name, model, example, extra in models:
        torch.onnx.export(model, example, f"{out}/{name}.onnx", opset_version=13,
                          do_constant_folding=False, input_names=["x"], output_names=["y"], **extra)
        count = sum(p.numel() for p in model.parameters())  # unique tensors: tied counts once
        print(name, count, "cross-entropy")


if __name__ == "__main__":
    main()
