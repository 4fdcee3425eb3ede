"""`python -m maxtext_like.eval base.yml run_name=x [key=value ...]`: loss and perplexity of a checkpoint.

Reads the parameters as decode does (`load_parameters_path`, else the latest checkpoint of `run_name`), float or
quantized (`quantization=...` quantizes on load; `checkpoint_is_quantized=true` reads a quantized checkpoint), and
runs the configured dataset's eval split: `eval_steps` batches (-1: the whole split) of
`eval_per_device_batch_size` rows. The loss is the token-weighted cross-entropy of the training step (padding and
untrained positions excluded, no z-loss or MoE balance term); perplexity is exp(loss). With `quantize_kvcache=true`
each batch runs through a fresh KV cache (as a prefill does), so attention reads the quantized keys and values and
the loss measures the cache's quantization too. Prints one JSON document and writes it to
<base_output_directory>/<run_name>/eval.json.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

from maxtext_like.cli_common import run_entry_point


def evaluate(cfg, through_cache: bool | None = None) -> dict:
  """{'loss', 'perplexity', 'tokens', 'batches', 'parameters', 'quantization', 'kv_cache', 'seconds'} of cfg's
  checkpoint. `through_cache` (default: quantize_kvcache) runs each batch through a fresh KV cache."""
  import jax
  from flax import nnx

  from maxtext_like.config.resolve import resolve
  from maxtext_like.inference.loading import load_model
  from maxtext_like.training.data_source import make_iterator
  from maxtext_like.training.step import cross_entropy, loss_fn

  start = time.perf_counter()
  loaded = load_model(cfg)
  graphdef, params, rest = nnx.split(loaded.model, nnx.Param, ...)
  def cached_loss(p, r, b):
    model = nnx.merge(graphdef, p, r)
    B, T = b["inputs"].shape
    logits, _ = model(b["inputs"], b["inputs_position"], b["inputs_segmentation"], cache=model.init_cache(B, T))
    return cross_entropy(logits, b["targets"], b["targets_segmentation"] != 0, 0.0)

  kv = cfg.quantization.quantize_kvcache
  step = jax.jit(cached_loss if (kv if through_cache is None else through_cache) else (lambda p, r, b: loss_fn(p, r, graphdef, b, 0.0, True)[1][:2]))
  rows = resolve(cfg, 1).global_batch_size_to_eval_on
  total = count = 0.0
  batches = 0
  for batch in make_iterator(cfg, rows, "eval"):
    if 0 < cfg.training.eval_steps <= batches:
      break
    t, c = step(params, rest, {k: jax.numpy.asarray(v) for k, v in batch.items()})
    total, count, batches = total + float(t), count + float(c), batches + 1
  loss = total / max(count, 1.0)
  return {"loss": loss, "perplexity": math.exp(loss), "tokens": int(count), "batches": batches,
          "parameters": loaded.source, "quantization": cfg.quantization.quantization or "float",
          "kv_cache": f"{cfg.quantization.kv_quant_dtype} ({cfg.quantization.kv_quant_axis})" if kv else "float",
          "seconds": round(time.perf_counter() - start, 2)}


def main(argv: list[str] | None = None) -> int:
  def body(cfg):
    result = evaluate(cfg)
    out_dir = os.path.join(cfg.run.base_output_directory, cfg.run.run_name)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "eval.json"), "w") as f:
      json.dump(result, f, indent=1)
    print(json.dumps(result), flush=True)
  return run_entry_point("eval", sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
  sys.exit(main())
