"""Parallelism within a slice (inter-chip interconnect)."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class IciSection(Section):
  """Parallelism within a slice (inter-chip interconnect). (MaxText: IciParallelism.)"""

  section_name = "ici"

  ici_diloco_parallelism: int = F('ICI axis for Diloco parallelism.')
  ici_data_parallelism: int = F('ICI axis for data parallelism.')
  ici_fsdp_parallelism: int = F('ICI axis for FSDP.')
  ici_fsdp_transpose_parallelism: int = F('ICI axis for FSDP transpose.')
  ici_sequence_parallelism: int = F('ICI axis for sequence parallelism.')
  ici_context_parallelism: int = F('ICI axis for context parallelism.')
  ici_context_autoregressive_parallelism: int = F('ICI axis for context autoregressive parallelism.')
  ici_tensor_parallelism: int = F('ICI axis for tensor parallelism.')
  ici_tensor_transpose_parallelism: int = F('Devices along the tensor_transpose mesh axis within a slice (-1: fill from the device count).')
  ici_tensor_sequence_parallelism: int = F('ICI axis for tensor sequence parallelism.')
  ici_autoregressive_parallelism: int = F('ICI axis for autoregressive parallelism.')
  ici_pipeline_parallelism: int = F('ICI axis for pipeline parallelism.')
  ici_expert_parallelism: int = F('ICI axis for expert parallelism.')
