"""A PyTorch GPT written to match meshpipe's zoo GPT (src/graph/models/transformer.cc, built from
the description there, not from its code): token plus position embeddings and a layer norm, then
post-LN blocks (separate q/k/v/out projections with biases, causal softmax attention scaled by
1/sqrt(head dim), a tanh-GELU MLP), and a head tied to the token embedding with its own bias.
Exports it with torch.onnx.export (no constant folding) for a batch of sequences.

Usage: /usr/bin/python3 zoo_gpt.py OUT.onnx SEQ HIDDEN LAYERS HEADS VOCAB FFN_MULT BATCH OPSET
Prints PyTorch's parameter count."""
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class Layer(nn.Module):
    def __init__(self, h, heads, ffn, t):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(h, h) for _ in range(4))
        self.ln_attn = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, ffn * h)
        self.fc2 = nn.Linear(ffn * h, h)
        self.ln_mlp = nn.LayerNorm(h)
        self.heads = heads
        self.scale = 1.0 / math.sqrt(h // heads)
        self.register_buffer("mask", torch.tril(torch.ones(t, t)).view(1, 1, t, t))

    def forward(self, x):
        b, t, h = x.shape
        split = lambda y: y.view(b, t, self.heads, h // self.heads).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        s = (q @ k.transpose(-2, -1)) * self.scale
        s = s.masked_fill(self.mask == 0, float("-inf"))
        ctx = (F.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(b, t, h)
        x = self.ln_attn(x + self.o(ctx))
        return self.ln_mlp(x + self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class ZooGPT(nn.Module):
    def __init__(self, t, h, layers, heads, vocab, ffn):
        super().__init__()
        self.wte = nn.Embedding(vocab, h)
        self.wpe = nn.Parameter(torch.randn(t, h) * 0.02)
        self.ln = nn.LayerNorm(h)
        self.blocks = nn.ModuleList([Layer(h, heads, ffn, t) for _ in range(layers)])
        self.head_bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, tokens):
        x = self.ln(self.wte(tokens) + self.wpe)
        for blk in self.blocks:
            x = blk(x)
        return x @ self.wte.weight.t() + self.head_bias


def main():
    out = sys.argv[1]
    t, h, layers, heads, vocab, ffn, batch, opset = (int(a) for a in sys.argv[2:10])
    torch.manual_seed(0)
    model = ZooGPT(t, h, layers, heads, vocab, ffn)
    tokens = torch.randint(0, vocab, (batch, t))
    torch.onnx.export(model, (tokens,), out, opset_version=opset, do_constant_folding=False,
                      input_names=["tokens"], output_names=["logits"])
    print(sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
