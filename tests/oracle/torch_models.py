"""PyTorch mirrors of meshpipe's zoo models, written functionally over a dict of parameters
whose names and layouts are exactly those of the meshpipe graph (weights are [in, out], x @ w).

Used by the oracle tests (tests/oracle/generate.py) and by the step-time benchmark
(bench/step_time.py). Run with Debian's /usr/bin/python3, which sees python3-torch.
"""
import math

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- parameter shapes

def gpt_param_shapes(cfg):
    """Name -> shape of every GPT parameter, in meshpipe's naming."""
    h, s, v, f = cfg["hidden"], cfg["seq_len"], cfg["vocab"], cfg["ffn_mult"] * cfg["hidden"]
    shapes = {"embed/wte": (v, h), "embed/wpe": (s, h),
              "embed/ln_gamma": (h,), "embed/ln_beta": (h,), "head/bias": (v,)}
    for i in range(cfg["layers"]):
        shapes.update(_attention_shapes(f"layer{i}/", h))
        shapes.update(_norm_shapes(f"layer{i}/", h))
        shapes.update(_dense_mlp_shapes(f"layer{i}/", h, f))
    return shapes


def moe_param_shapes(cfg):
    h, s, v = cfg["hidden"], cfg["seq_len"], cfg["vocab"]
    f, e = cfg["ffn_mult"] * h, cfg["experts"]
    shapes = {"embed/wte": (v, h), "embed/wpe": (s, h),
              "embed/ln_gamma": (h,), "embed/ln_beta": (h,), "head/bias": (v,)}
    for i in range(cfg["layers"]):
        p = f"layer{i}/"
        shapes.update(_attention_shapes(p, h))
        shapes.update(_norm_shapes(p, h))
        if i % 2 == 0:
            shapes.update({p + "moe/wg": (h, e), p + "moe/wi": (e, h, f), p + "moe/bi": (e, f),
                           p + "moe/wo": (e, f, h), p + "moe/bo": (e, h)})
        else:
            shapes.update(_dense_mlp_shapes(p, h, f))
    return shapes


def wresnet_param_shapes(cfg):
    c0, w, cin = cfg["channels"], cfg["width_factor"], cfg["in_channels"]
    shapes = {}
    _conv_bn_shapes(shapes, "stem/conv", cin, c0, 7)
    in_c, layer = c0, 0
    for s, blocks in enumerate(cfg["stage_sizes"]):
        f = c0 << s
        for j in range(blocks):
            stride = 2 if (s > 0 and j == 0) else 1
            p = f"block{layer}/"
            _conv_bn_shapes(shapes, p + "conv1", in_c, f, 1)
            _conv_bn_shapes(shapes, p + "conv2", f, f * w, 3)
            _conv_bn_shapes(shapes, p + "conv3", f * w, 4 * f, 1)
            if in_c != 4 * f or stride != 1:
                _conv_bn_shapes(shapes, p + "proj", in_c, 4 * f, 1)
            in_c, layer = 4 * f, layer + 1
    shapes["head/fc_w"] = (in_c, cfg["num_classes"])
    shapes["head/fc_b"] = (cfg["num_classes"],)
    return shapes


def _attention_shapes(p, h):
    out = {}
    for n in "qkvo":
        out[f"{p}attn/w{n}"] = (h, h)
        out[f"{p}attn/b{n}"] = (h,)
    return out


def _norm_shapes(p, h):
    return {p + "ln_attn_gamma": (h,), p + "ln_attn_beta": (h,),
            p + "ln_mlp_gamma": (h,), p + "ln_mlp_beta": (h,)}


def _dense_mlp_shapes(p, h, f):
    return {p + "mlp/w1": (h, f), p + "mlp/b1": (f,), p + "mlp/w2": (f, h), p + "mlp/b2": (h,)}


def _conv_bn_shapes(shapes, name, cin, cout, k):
    shapes[name + "_w"] = (cout, cin, k, k)
    shapes[name + "_bn_gamma"] = (cout,)
    shapes[name + "_bn_beta"] = (cout,)


# ---------------------------------------------------------------- forward passes

def _layer_norm(x, P, name):
    return F.layer_norm(x, (x.shape[-1],), P[name + "_gamma"], P[name + "_beta"], eps=1e-5)


def _embed(P, tokens):
    x = P["embed/wte"][tokens.long()] + P["embed/wpe"]
    return F.layer_norm(x, (x.shape[-1],), P["embed/ln_gamma"], P["embed/ln_beta"], eps=1e-5)


def _attention(P, p, x, heads):
    b, s, h = x.shape
    hd = h // heads

    def split(n):
        y = x @ P[f"{p}attn/w{n}"] + P[f"{p}attn/b{n}"]
        return y.view(b, s, heads, hd).transpose(1, 2)

    q, k, v = split("q"), split("k"), split("v")
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    ctx = (probs @ v).transpose(1, 2).reshape(b, s, h)
    return ctx @ P[f"{p}attn/wo"] + P[f"{p}attn/bo"]


def _dense_mlp(P, p, x):
    hdn = F.gelu(x @ P[p + "mlp/w1"] + P[p + "mlp/b1"], approximate="tanh")
    return hdn @ P[p + "mlp/w2"] + P[p + "mlp/b2"]


def _lm_loss(P, x, labels):
    logits = x @ P["embed/wte"].T + P["head/bias"]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long())


def gpt_loss(P, cfg, tokens, labels):
    """Post-LN GPT (Alpa's BERT-style layer with a causal mask), tied LM head."""
    x = _embed(P, tokens)
    for i in range(cfg["layers"]):
        p = f"layer{i}/"
        x = _layer_norm(x + _attention(P, p, x, cfg["heads"]), P, p + "ln_attn")
        x = _layer_norm(x + _dense_mlp(P, p, x), P, p + "ln_mlp")
    return _lm_loss(P, x, labels)


def topk_gating(probs, k, capacity):
    """GShard top-k gating, the rule of src/kernels/moe.h: choice j picks the argmax over experts
    not yet picked; positions count earlier tokens of the same choice plus all tokens of earlier
    choices for that expert; choices at position >= capacity are dropped; gates of kept choices
    are normalised when k > 1. Returns (combine, dispatch), each [G, S, E, C]."""
    g, s, e = probs.shape
    picked = torch.zeros(g, s, e, dtype=torch.bool)
    earlier = torch.zeros(g, 1, e)
    choices = []
    for _ in range(k):
        masked = probs.detach().masked_fill(picked, float("-inf"))
        idx = masked.argmax(dim=-1)                                  # [G, S]
        onehot = F.one_hot(idx, e).to(probs.dtype)                   # [G, S, E]
        pos = (torch.cumsum(onehot, dim=1) - onehot + earlier) * onehot
        pos = pos.sum(dim=-1)                                        # [G, S]
        keep = (pos < capacity).to(probs.dtype)
        gate = (probs * onehot).sum(dim=-1) * keep                   # [G, S]
        choices.append((onehot, pos.long(), keep, gate))
        earlier = earlier + onehot.sum(dim=1, keepdim=True)
        picked = picked | onehot.bool()
    gates = [c[3] for c in choices]
    if k > 1:
        denom = sum(gates)
        denom = torch.where(denom > 0, denom, torch.ones_like(denom))
        gates = [gt / denom for gt in gates]
    combine = torch.zeros(g, s, e, capacity, dtype=probs.dtype)
    for (onehot, pos, keep, _), gate in zip(choices, gates):
        slot = F.one_hot(pos.clamp(max=capacity - 1), capacity).to(probs.dtype)  # [G, S, C]
        combine = combine + (gate * keep).unsqueeze(-1).unsqueeze(-1) * \
            onehot.unsqueeze(-1) * slot.unsqueeze(2)
    dispatch = (combine > 0).to(probs.dtype)
    return combine, dispatch


def moe_feed_forward(P, p, cfg, x):
    b, s, m = x.shape
    gs = cfg["group_size"]
    xg = x.reshape(b * s // gs, gs, m)
    gates = torch.softmax(xg @ P[p + "moe/wg"], dim=-1)
    capacity = max(1, cfg["top_k"] * gs // cfg["experts"])
    combine, dispatch = topk_gating(gates, cfg["top_k"], capacity)
    x_in = torch.einsum("gsec,gsm->gecm", dispatch, xg)
    h = torch.einsum("gecm,emf->egcf", x_in, P[p + "moe/wi"]) + P[p + "moe/bi"][:, None, None, :]
    h = torch.relu(h)
    out = torch.einsum("egcf,efm->egcm", h, P[p + "moe/wo"]) + P[p + "moe/bo"][:, None, None, :]
    y = torch.einsum("gsec,egcm->gsm", combine, out)
    return y.reshape(b, s, m)


def moe_loss(P, cfg, tokens, labels):
    """Alpa's MoE model: even layers have an MoE feed-forward, odd layers a dense one."""
    x = _embed(P, tokens)
    for i in range(cfg["layers"]):
        p = f"layer{i}/"
        x = _layer_norm(x + _attention(P, p, x, cfg["heads"]), P, p + "ln_attn")
        ff = moe_feed_forward(P, p, cfg, x) if i % 2 == 0 else _dense_mlp(P, p, x)
        x = _layer_norm(x + ff, P, p + "ln_mlp")
    return _lm_loss(P, x, labels)


def _conv_bn(P, name, x, stride, relu=True):
    w = P[name + "_w"]
    k = w.shape[-1]
    y = F.conv2d(x, w, stride=stride, padding=k // 2)
    y = F.batch_norm(y, None, None, P[name + "_bn_gamma"], P[name + "_bn_beta"],
                     training=True, eps=1e-5)
    return torch.relu(y) if relu else y


def wresnet_loss(P, cfg, images, labels):
    """Wide-ResNet with bottleneck blocks (NCHW), training-mode batch norm."""
    x = _conv_bn(P, "stem/conv", images, 2)
    x = F.max_pool2d(x, 3, 2, 1)
    c0, in_c, layer = cfg["channels"], cfg["channels"], 0
    for s, blocks in enumerate(cfg["stage_sizes"]):
        f = c0 << s
        for j in range(blocks):
            stride = 2 if (s > 0 and j == 0) else 1
            p = f"block{layer}/"
            y = _conv_bn(P, p + "conv1", x, 1)
            y = _conv_bn(P, p + "conv2", y, stride)
            y = _conv_bn(P, p + "conv3", y, 1, relu=False)
            short = x
            if in_c != 4 * f or stride != 1:
                short = _conv_bn(P, p + "proj", x, stride, relu=False)
            x = torch.relu(short + y)
            in_c, layer = 4 * f, layer + 1
    pooled = x.mean(dim=(2, 3))
    logits = pooled @ P["head/fc_w"] + P["head/fc_b"]
    return F.cross_entropy(logits, labels.long())
