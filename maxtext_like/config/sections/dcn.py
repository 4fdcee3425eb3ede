"""Parallelism across slices (data-center network)."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class DcnSection(Section):
  """Parallelism across slices (data-center network). (MaxText: DcnParallelism.)"""

  section_name = "dcn"

  dcn_diloco_parallelism: int = F('DCN axis for Diloco parallelism.')
  dcn_data_parallelism: int = F('DCN axis for data parallelism.')
  dcn_fsdp_parallelism: int = F('DCN axis for FSDP.')
  dcn_fsdp_transpose_parallelism: int = F('DCN axis for FSDP transpose.')
  dcn_sequence_parallelism: int = F('DCN axis for sequence parallelism (not recommended).')
  dcn_context_parallelism: int = F('DCN axis for context parallelism.')
  dcn_context_autoregressive_parallelism: int = F('DCN axis for context autoregressive parallelism.')
  dcn_tensor_parallelism: int = F('DCN axis for tensor parallelism (not recommended).')
  dcn_tensor_transpose_parallelism: int = F('Slices along the tensor_transpose mesh axis (-1: fill from the slice count).')
  dcn_tensor_sequence_parallelism: int = F('DCN axis for tensor sequence parallelism (not recommended).')
  dcn_pipeline_parallelism: int = F('DCN axis for pipeline parallelism.')
  dcn_expert_parallelism: int = F('DCN axis for expert parallelism.')
  dcn_autoregressive_parallelism: int = F('DCN axis for autoregressive parallelism (not recommended).')
