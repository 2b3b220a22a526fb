#!/usr/bin/env python3
"""Tokenizes text files byte-level (token = byte, vocabulary 256) into the token-file layout
meshpipe's --data reads: llm.c's header (256 int32: magic 20240520, version 1, token count)
followed by the tokens as little-endian uint16.

Usage: scripts/tokenize-bytes.py OUT.bin TEXT [TEXT ...]
A model trained on it needs a vocabulary of at least 256 (gpt-cpu has 1024).
Standard library only."""
import array
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = sys.argv[1]
    tokens = array.array("H")
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            tokens.extend(f.read())  # one token per byte
    if sys.byteorder != "little":  # the file is little-endian
        tokens.byteswap()
    if len(tokens) >= 2**31:
        sys.exit("more than 2^31 - 1 tokens: split the input")
    header = array.array("i", [0] * 256)
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    if sys.byteorder != "little":
        header.byteswap()
    with open(out, "wb") as f:
        header.tofile(f)
        tokens.tofile(f)
    print(f"{out}: {len(tokens)} tokens (byte-level, llm.c layout v1)")


if __name__ == "__main__":
    main()
