"""Exports the models of the ONNX tests with PyTorch (torch.onnx.export, opset 13) into DIR and
prints one line per model: name, PyTorch's parameter count (unique tensors: a tied weight counts
once; buffers do not count), and the loss meshpipe should train it with.
Usage: /usr/bin/python3 export_models.py DIR"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from train_compare import GPT  # nanoGPT: tied head, causal mask buffer, exact GELU


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
