"""Numeric types of weights, activations and matmuls."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class DTypesSection(Section):
  """Numeric types of weights, activations and matmuls. (MaxText: DataTypes.)"""

  section_name = "dtypes"

  dtype: Literal['bfloat16', 'float32', 'float16'] = F('The data type for activations. MaxText: bfloat16. float32 is faster on CPU; set bfloat16 on accelerators.')
  grad_dtype: Literal['bfloat16', 'float32', 'float16'] = F('The data type for gradients.')
  weight_dtype: Literal['bfloat16', 'float32', 'float16'] = F('The data type for model weights.')
  matmul_precision: Literal['default', 'high', 'highest', 'bfloat16', 'float32'] = F('Precision level for matrix multiplications.')
  activations_in_float32: bool = F('If True, sets activations to float32 before the nonlinearity.')
  dtype_mm: str = F("Data type for multimodal model's vision encoder")
