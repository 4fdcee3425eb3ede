"""Quantized training and serving."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class QuantizationSection(Section):
  """Quantized training and serving. (MaxText: Quantization.)"""

  section_name = "quantization"

  quantization: None | Literal['', 'int4', 'int8', 'int4w', 'int8w', 'intmp', 'fp8', 'fp8_e4m3', 'fp8_e5m2', 'nanoo_fp8', 'fp8_nanoo', 'fp8_gpu', 'fp8_full', 'te_fp8_delayedscaling', 'te_fp8_currentscaling', 'te_mxfp8', 'te_nvfp4', 'te_nvfp4_no_rht'] = F('Activates quantization for transformer layers: int8, int4 and fp8 quantize weights and activations, int8w and int4w weights only, intmp per module from quant_cfg_path.')
  replicate_quant_scale: bool = F('Replicates quantization scale to avoid inefficient XLA fusion.')
  quant_cfg_path: str = F("Path to the configuration file for 'intmp' quantization.")
  quantize_kvcache: bool = F('If True, quantizes the Key-Value cache.')
  kv_quant_axis: Literal['', 'dkv', 'heads_and_dkv'] = F('Axes to quantize over for the KV cache.')
  kv_quant_dtype: Literal['int8', 'int4', 'fp8'] = F('Data type for KV cache quantization (fp8: float8_e4m3fn).')
  quantization_local_shard_count: int = F('Shards the range finding operation for quantization.')
  use_qwix_quantization: bool = F('Whether to use qwix for quantization.')
  use_manual_quantization: bool = F('Whether to use manual quantization for batch split. Only used if `use_batch_split_schedule=True`.')
  weight_quantization_calibration_method: str = F('Quantization calibration method used for weights.')
  act_quantization_calibration_method: str = F('Quantization calibration method used for activations.')
  bwd_quantization_calibration_method: str = F('Quantization calibration method used for gradients.')
  weight_sparsity_n: int | None = F("The 'N' in N:M sparsity, representing the maximum number of non-zero values in each block.")
  weight_sparsity_m: int | None = F("The 'M' in N:M sparsity, representing the number of values in each block.")
  weight_sparsity_update_step: int = F('The step size for updating weight sparsity masks.')
  weight_sparsity_start_step: int = F('The first number of steps before updating the sparsity masks.')
