#!/usr/bin/env python3
"""Dequantizes every tensor of a GGUF file with the `gguf` package's numpy dequantizer
(`gguf.quants.dequantize`, an implementation independent of this project's), for the tests.

    scripts/gguf_dequantize.py MODEL.gguf OUT.f32 [--names NAME ...]

Writes the tensors' values as little-endian float32, one tensor after the other in file order
(or in the order of --names), to OUT.f32, and prints one JSON object:
{"tensors": [{"name", "type", "count", "offset"}]} with offsets in values.
"""
import argparse
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--names", nargs="*", help="only these tensors, in this order")
    args = parser.parse_args()

    reader = GGUFReader(args.model)
    by_name = {t.name: t for t in reader.tensors}
    names = args.names if args.names else [t.name for t in reader.tensors]
    listing, offset = [], 0
    with open(args.out, "wb") as out:
        for name in names:
            if name not in by_name:
                print(f"error: no tensor {name} in {args.model}", file=sys.stderr)
                return 1
            tensor = by_name[name]
            values = np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type), dtype="<f4").reshape(-1)
            out.write(values.tobytes())
            listing.append({"name": name, "type": tensor.tensor_type.name, "count": int(values.size), "offset": offset})
            offset += int(values.size)
    print(json.dumps({"tensors": listing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
