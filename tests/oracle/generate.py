#!/usr/bin/env python3
"""Generates the PyTorch reference data of the oracle tests: for a small GPT, an MoE model and a
Wide-ResNet, random float32 weights and inputs, and the loss and every parameter gradient
computed by PyTorch (in float64 from the float32 values, so the reference is exact to ~1e-15).

    /usr/bin/python3 tests/oracle/generate.py OUT_DIR

writes OUT_DIR/oracle_{gpt,moe,wresnet}.json. tests/data/ holds the committed copies that the
regular test suite reads (tests/runtime/oracle_test.cc); the `oracle` ctest label regenerates
them into a temporary directory and compares again. Exit code 0 with a warning when torch is
missing.
"""
import json
import os
import sys

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"WARNING: PyTorch/NumPy not importable ({e}); oracle data not generated")
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models as tm  # noqa: E402

CASES = {
    "gpt": {
        "family": "gpt", "batch": 2,
        "config": {"seq_len": 8, "hidden": 16, "layers": 2, "heads": 2, "vocab": 24,
                   "ffn_mult": 4},
    },
    "moe": {
        "family": "moe", "batch": 2,
        "config": {"seq_len": 8, "hidden": 16, "layers": 2, "heads": 2, "vocab": 24,
                   "experts": 4, "group_size": 8, "ffn_mult": 2, "top_k": 2},
    },
    "wresnet": {
        "family": "wresnet", "batch": 4,
        "config": {"image_size": 16, "channels": 4, "width_factor": 2, "stage_sizes": [1, 1],
                   "num_classes": 5, "in_channels": 3},
    },
}


def tensor_json(a, dtype):
    a = np.asarray(a)
    data = [int(v) for v in a.reshape(-1)] if dtype == "i32" else \
        [float(np.float32(v)) for v in a.reshape(-1)]
    return {"shape": list(a.shape), "dtype": dtype, "data": data}


def init_params(shapes, rng):
    params = {}
    for name, shape in sorted(shapes.items()):
        if name.endswith("_gamma"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1:  # biases and betas
            w = 0.1 * rng.standard_normal(shape)
        elif name == "embed/wte" or name == "embed/wpe":
            w = 0.5 * rng.standard_normal(shape)
        else:
            # [out, in, kh, kw] convolutions, [.., in, out] matrices; MoE biases [E, F] too.
            fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[-2]
            if name.endswith("/bi") or name.endswith("/bo"):
                fan_in = 100
            w = rng.standard_normal(shape) / np.sqrt(fan_in)
        params[name] = w.astype(np.float32)
    return params


def run_case(name, case, rng):
    cfg, batch, family = case["config"], case["batch"], case["family"]
    if family == "gpt":
        shapes = tm.gpt_param_shapes(cfg)
    elif family == "moe":
        shapes = tm.moe_param_shapes(cfg)
    else:
        shapes = tm.wresnet_param_shapes(cfg)
    params = init_params(shapes, rng)
    if family == "wresnet":
        size = cfg["image_size"]
        images = rng.standard_normal((batch, cfg["in_channels"], size, size)).astype(np.float32)
        labels = rng.integers(0, cfg["num_classes"], size=(batch,)).astype(np.int32)
        inputs = {"images": tensor_json(images, "f32"), "labels": tensor_json(labels, "i32")}
        torch_inputs = (torch.from_numpy(images).double(), torch.from_numpy(labels))
    else:
        tokens = rng.integers(0, cfg["vocab"], size=(batch, cfg["seq_len"])).astype(np.int32)
        labels = rng.integers(0, cfg["vocab"], size=(batch, cfg["seq_len"])).astype(np.int32)
        inputs = {"tokens": tensor_json(tokens, "i32"), "labels": tensor_json(labels, "i32")}
        torch_inputs = (torch.from_numpy(tokens), torch.from_numpy(labels))

    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    loss_fn = {"gpt": tm.gpt_loss, "moe": tm.moe_loss, "wresnet": tm.wresnet_loss}[family]
    loss = loss_fn(P, cfg, *torch_inputs)
    loss.backward()
    return {
        "family": family, "batch": batch, "config": cfg,
        "inputs": inputs,
        "params": {k: tensor_json(v, "f32") for k, v in params.items()},
        "loss": float(loss.item()),
        "grads": {k: tensor_json(P[k].grad.numpy(), "f32") for k in params},
    }


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    for i, (name, case) in enumerate(CASES.items()):
        rng = np.random.default_rng(1000 + i)
        data = run_case(name, case, rng)
        path = os.path.join(out_dir, f"oracle_{name}.json")
        with open(path, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        print(f"wrote {path}: loss {data['loss']:.6f}, {len(data['params'])} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
