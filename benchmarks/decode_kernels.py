"""Decode step time of the serving engine with XLA's matmuls vs the CPU decode kernels, side by side in one process.

`cpu_decode_kernels=false` against the default (`maxtext_like/kernels/`: the few-row matmuls, the few-query attention
and the logits' argmax and log-sum-exp of the generate step as C++ kernels called through XLA's FFI). Probe model and
protocol of `benchmarks/kv_quant_decode.py`: per (batch, max_target_length) cell one engine per kind, every slot filled with a
64-token prompt, 3 warm-up steps; then --reps rounds, each timing --steps greedy `Engine.generate` calls of both
engines in turn (so a busy moment on the shared machine hits both), and the median ms per step is reported with
the XLA step's time over the kernels' one.

Run: .venv/bin/python benchmarks/decode_kernels.py [--cells 1x256 4x256 1x1088 4x1088] [--reps 5] [--steps 20]
"""

from __future__ import annotations

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from kv_quant_decode import side_by_side  # noqa: E402

KINDS = {"XLA": ["cpu_decode_kernels=false"], "kernels": []}

if __name__ == "__main__":
  side_by_side(sys.argv[1:], KINDS, __doc__.splitlines()[0], ["1x256", "4x256", "1x1088", "4x1088"])
