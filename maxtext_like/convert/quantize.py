"""`python -m maxtext_like.convert quantize base.yml quantization=int8w load_parameters_path=F save_quantized_params_path=Q`:
a float checkpoint -> a quantized one (integer or fp8 values and float scales; see runtime/quantized.py), which
decode, eval, the microbenchmark and the server load with `checkpoint_is_quantized=true load_parameters_path=Q`."""

from __future__ import annotations

import os

from maxtext_like.convert.errors import ConvertError


def quantize(argv: list[str]) -> str:
  """Quantize the configured float parameters and write them to save_quantized_params_path; returns that path."""
  from maxtext_like.config import ConfigError, load_config
  from maxtext_like.inference.loading import load_model
  try:
    cfg = load_config(argv)
  except ConfigError as e:
    raise ConvertError(str(e)) from None
  missing = [k for k, v in (("quantization", cfg.quantization.quantization),
                            ("save_quantized_params_path", cfg.checkpointing.save_quantized_params_path)) if not v]
  if missing:
    raise ConvertError(f"quantize needs {' and '.join(missing)} (e.g. quantization=int8w "
                       "save_quantized_params_path=DIR, with load_parameters_path=<float checkpoint>)")
  if cfg.checkpointing.checkpoint_is_quantized:
    raise ConvertError("checkpoint_is_quantized=true: the input is already quantized; quantize reads a float "
                       "checkpoint (load_parameters_path)")
  if not cfg.checkpointing.load_parameters_path:
    raise ConvertError("quantize needs load_parameters_path=<float checkpoint step directory>; without it there is "
                       "nothing trained to quantize")
  out = os.path.abspath(cfg.checkpointing.save_quantized_params_path)
  if os.path.exists(out) and os.listdir(out):
    raise ConvertError(f"save_quantized_params_path={out} already exists and is not empty; choose a new directory "
                       "(nothing was overwritten)")
  load_model(cfg)  # quantized on load and written to save_quantized_params_path (inference/loading.py)
  return out
