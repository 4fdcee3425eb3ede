"""Pipeline parallelism."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class PipelineSection(Section):
  """Pipeline parallelism. (MaxText: PipelineParallelism.)"""

  section_name = "pipeline"

  pipeline_fsdp_ag_per_repeat: bool = F('Enable weight prefetching for circular pipeline parallelism.')
  num_layers_per_pipeline_stage: int = F('Number of layers to place on each pipeline stage.')
  num_pipeline_repeats: int = F('Number of pipeline repeats. Calculated from other params if -1.')
  pipeline_parallel_layers: int = F('Number of layers to pipeline. -1 pipelines all decoder layers.')
  num_pipeline_microbatches: int = F('Number of microbatches for the pipeline. -1 defaults to num_stages.')
  pipeline_delay_activation_forwarding: bool = F('Delays activation forwarding to aid XLA optimization.')
  pipeline_fsdp_ag_once: bool = F('If True, all-gather FSDP weights once per pipeline repeat.')
  scan_pipeline_iterations: bool = F('Use jax.lax.scan over pipeline iterations.')
  scan_pipeline_repeats: bool = F('Use jax.lax.scan over pipeline repeats.')
  scan_layers_per_stage: bool = F('Use jax.lax.scan over layers within a stage.')
  set_remat_policy_on_pipeline_iterations: bool = F('Set remat policy on the pipeline scan.')
  set_remat_policy_on_layers_per_stage: bool = F('Set remat policy on the inner layer scan.')
