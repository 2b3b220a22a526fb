"""Writes the ONNX files and .npy arrays of the model-file surface (tests/robustness/
model_file.sh) into the current directory, with protobuf and .npy bytes written by hand (no
onnx or numpy package needed). Usage: /usr/bin/python3 onnx_files.py WHAT
  good      good.onnx (loss = sum(x @ w), x [4, 3] data, w [3, 2]) and data/x.npy (8 rows)
  hostile   one file per hostile case (names below)
"""
import os
import struct
import sys


def varint(v):
    v &= (1 << 64) - 1
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def key(f, t):
    return varint((f << 3) | t)


def I(f, v):
    return key(f, 0) + varint(v)


def S(f, b):
    if isinstance(b, str):
        b = b.encode()
    return key(f, 2) + varint(len(b)) + b


def node(op, ins, outs, attrs=b""):
    return (b"".join(S(1, i) for i in ins) + b"".join(S(2, o) for o in outs) + S(3, "/" + op) +
            S(4, op) + attrs)


def value_info(name, dims, elem=1):
    shape = b"".join(S(1, I(1, d)) for d in dims)
    return S(1, name) + S(2, S(1, I(1, elem) + S(2, shape)))


def model(graph):
    return I(1, 8) + S(2, "pytorch") + S(7, graph) + S(8, S(1, "") + I(2, 13))


def float_tensor(name, dims, values):
    return b"".join(I(1, d) for d in dims) + I(2, 1) + S(8, name) + S(
        9, struct.pack("<%df" % len(values), *values))


def npy(descr, shape, raw):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, dims)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + raw


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


LOSS = value_info("loss", [])


def good_graph(input_name="x"):
    return (S(1, node("MatMul", [input_name, "w"], ["h"])) +
            S(1, node("ReduceSum", ["h"], ["loss"], S(5, S(1, "keepdims") + I(20, 2) + I(3, 0)))) +
            S(5, float_tensor("w", [3, 2], [0.5, -0.25, 0.125, 1.0, -1.0, 0.75])) +
            S(11, value_info(input_name, [4, 3])) + S(12, LOSS))


def good():
    write("good.onnx", model(good_graph()))
    os.makedirs("data", exist_ok=True)
    write("data/x.npy", npy("<f4", [8, 3], struct.pack("<24f", *[k / 8 - 1 for k in range(24)])))


def hostile():
    write("random.onnx", os.urandom(5000))
    write("truncated.onnx", model(good_graph())[:57])
    # An input named to climb out of the data folder.
    write("climb.onnx", model(good_graph("../../guard/outside")))
    # An op meshpipe does not import.
    write("cos.onnx", model(S(1, node("Cos", ["x"], ["c"])) + S(1, node(
        "ReduceSum", ["c"], ["loss"], S(5, S(1, "keepdims") + I(20, 2) + I(3, 0)))) +
        S(11, value_info("x", [4, 3])) + S(12, LOSS)))
    # An int64 initializer claiming 2^40 elements, without data, used as a shape.
    write("huge_int.onnx", model(S(1, node("Reshape", ["x", "sh"], ["loss"])) +
                                 S(5, I(1, 1 << 40) + I(2, 7) + S(8, "sh")) +
                                 S(11, value_info("x", [2, 2])) + S(12, LOSS)))
    # A float initializer whose byte count wraps 64 bits.
    write("wrap.onnx", model(S(1, node("Add", ["x", "w"], ["loss"])) +
                             S(5, I(1, 1 << 62) + I(1, 4) + I(2, 1) + S(8, "w") + S(9, b"")) +
                             S(11, value_info("x", [2, 2])) + S(12, LOSS)))
    # Subgraphs nested 200 deep.
    inner = S(1, node("Relu", ["a"], ["b"])) + S(12, value_info("b", [1]))
    for _ in range(200):
        inner = S(1, node("If", ["c"], ["o"], S(5, S(1, "then_branch") + I(20, 5) + S(6, inner)))) + \
            S(12, value_info("o", [1]))
    write("deep.onnx", model(inner))
    # An input of 2^80 elements.
    write("big_input.onnx", model(S(1, node("ReduceSum", ["x"], ["loss"])) +
                                  S(11, value_info("x", [1 << 40, 1 << 40])) + S(12, LOSS)))
    # Data: an array whose header claims 2^40 rows, and one of the wrong type.
    os.makedirs("liar", exist_ok=True)
    write("liar/x.npy", npy("<f4", [1 << 40, 3], b"\0" * 48))
    os.makedirs("ints", exist_ok=True)
    write("ints/x.npy", npy("<i8", [8, 3], b"\0" * 192))


if __name__ == "__main__":
    {"good": good, "hostile": hostile}[sys.argv[1]]()
