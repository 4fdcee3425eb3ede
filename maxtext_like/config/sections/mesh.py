"""Hardware, device mesh, layer scanning and sharding rules."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class MeshSection(Section):
  """Hardware, device mesh, layer scanning and sharding rules. (MaxText: HardwareAndMesh, LayoutAndSharding.)"""

  section_name = "mesh"

  hardware: Literal['auto', 'tpu', 'gpu', 'gpu_multiprocess', 'cpu'] = F("The type of hardware to run on. MaxText: tpu. 'auto' takes the platform JAX finds (cpu, gpu or tpu).")
  num_slices: int = F('Number of TPU slices. Automatically determined.')
  mesh_axes: list[str] = F('The names of the axes in the logical device mesh.')
  shard_mode: Literal['auto', 'explicit'] = F('can be either auto or explicit')
  inhomogeneous_layer_cycle_interval: int = F('The interval of repeated inhomogeneous layer patterns.')
  scan_layers: bool = F('Whether to use jax.lax.scan over layers (stacked/unstacked checkpoint). When resuming from a checkpoint, this flag is auto-determined from metadata.')
  param_scan_axis: int = F('Axis to scan over for parameters.')
  context_parallel_load_balance: bool = F('Whether to use load balancing for context parallelism.')
  context_parallel_strategy: str = F("Strategy for context parallelism ('all_gather', 'ring', 'ulysses', or 'usp').")
  context_parallel_reorder_strategy: Literal['auto', 'dual_chunk_swap', 'striped'] = F('Reorder strategy for load-balanced context parallelism.')
  custom_mesh: str = F("Available options: ['hybrid_ring_64x4', 'hybrid_ring_32x8']")
  custom_mesh_and_rule: Literal['', 'pure-fsdp', 'cp-as-ep', 'ep-as-cp', 'pipeline-large-moe', '2d-fsdp', 'ep-as-dp', 'shard-exp-on-fsdp', 'fsdp-as-dp-for-attn'] = F('Customized mesh and logical rules for granularity.')
  allow_split_physical_axes: bool = F('Allow splitting physical axes for device mesh creation.')
  enable_nnx: bool = F('MaxText switch for its NNX code path; maxtext_like is NNX-only, so this is accepted and has no effect to choose.')
  optimize_mesh_for_tpu_v6e: bool = F('Apply transformations to the mesh for TPU v6e.')
  shardy: bool = F('Whether to use shardy XLA backend.')
  pure_nnx_decoder: bool = F('MaxText switch for its pure-NNX decoder; maxtext_like is NNX-only.')
  pure_nnx: bool = F('MaxText switch for pure-NNX training; maxtext_like is NNX-only.')
  remove_size_one_mesh_axis_from_type: bool = F('Whether to remove size one mesh axis from type through jax.config.')
  logical_axis_rules: list[tuple[str, str | list[str]]] = F('Rules for mapping logical axes to physical mesh axes.')
  data_sharding: list[list[str]] = F('Sharding for input data.')
  context_sharding: str = F('Physical axis name for context parallelism.')
  input_data_sharding_logical_axes: list[str] = F('Logical axes for sharding input data.')
  sharding_tolerance: float = F('Allowed percentage of non-sharded parameters.')
  shard_optimizer_over_data: bool = F('Enable ZeRO-1 optimizer sharding over the data axis.')
  internal_compile: bool = F('Use internal_compile to bypass open-source topology mappings.')
  internal_compile_num_devices: int = F('Number of devices when using internal_compile.')
  compile_xla_flags: str = F('Compiler options for compilation only.')
  jax_coordinator_address: str = F("host:port of process 0 for jax.distributed.initialize; '' reads JAX_COORDINATOR_ADDRESS or the cluster environment (SLURM, TPU, GKE). maxtext_like addition.")
  jax_num_processes: int = F('Number of processes of a multi-process run; -1 reads JAX_NUM_PROCESSES or the cluster environment. maxtext_like addition.')
  jax_process_id: int = F("This process's index; -1 reads JAX_PROCESS_ID or the cluster environment. maxtext_like addition.")
  peak_flops_per_device: NonNegFloat = F('Peak FLOP/s of one device for MFU. 0: a known figure for the accelerator, or a short matmul probe (cached) on CPU.')
