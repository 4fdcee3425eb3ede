"""Development, profiling, HLO dumps and stack traces."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class DebugSection(Section):
  """Development, profiling, HLO dumps and stack traces. (MaxText: DevelopmentAndDebugging, Profiling, HloDump, StackTrace, Debug.)"""

  section_name = "debug"

  constant_bound_config: list = F('Legacy configuration for constant bounds.')
  jax_cache_dir: str | None = F('Directory for JAX compilation cache.')
  jax_distributed_initialization_timeout: int = F('Timeout for jax.distributed.initialize.')
  jax_debug_log_modules: str = F("Set to 'jax' for verbose JAX logging.")
  skip_jax_distributed_system: bool = F('If True, do not initialize the jax distributed system.')
  enable_single_controller: bool = F('Enable single-controller mode (Pathways).')
  subslice_shape: str = F("Subslice shape in the form of 'x,y,z' for Pathways.")
  max_checkify: bool = F('If True, perform extra checks using jax.checkify, affecting performance.')
  profiler: Literal['', 'xplane', 'nsys'] = F("Profiler to use ('xplane', 'nsys').")
  upload_all_profiler_results: bool = F('Upload profiler results from all hosts.')
  skip_first_n_steps_for_profiler: int = F('Number of initial steps to skip for profiling.')
  profiler_steps: int = F('Number of steps to profile.')
  profile_cleanly: bool = F('Add block_until_ready to align profile for each step.')
  profile_periodically_period: int = F('If positive, profile every N steps.')
  hide_profiler_step_metric: bool = F('Whether to enable profiler step metric.')
  enable_jax_profiler: bool = F('Enable the JAX live profiler.')
  jax_profiler_port: int = F('Port for the JAX profiler.')
  enable_tpu_profiling_options: bool = F('Enable TPU advanced profiling options.')
  tpu_num_chips_to_profile_per_task: int = F('Specifies the number of TPU chips to profile per task.')
  tpu_num_sparse_cores_to_trace: int = F('Specifies the number of TPU chips to profile per task.')
  tpu_num_sparse_core_tiles_to_trace: int = F('Specifies the number of tiles within each sparse core to trace on the TPU.')
  xprof_tpu_power_trace_level: Literal[0, 1, 2] = F('TPU power trace level. The value should be 0 (POWER_TRACE_NONE), 1 (POWER_TRACE_NORMAL), or 2 (POWER_TRACE_SPI)')
  xprof_e2e_enable_fw_throttle_event: bool = F('Enable FW throttle event.')
  xprof_e2e_enable_fw_power_level_event: bool = F('Enable FW power level event.')
  xprof_e2e_enable_fw_thermal_event: bool = F('Enable FW thermal event.')
  profile_power_events: bool = F('Enable TPU-specific power/thermal profiling events. Defaults to False to avoid breaking GPU xplane tracing.')
  dump_hlo: bool = F('Enable HLO dumping.')
  dump_step: int = F('Dump HLO at a specific step. -1 disables step-specific dump.')
  dump_hlo_local_dir: str = F('Local directory to dump HLO.')
  dump_hlo_delete_local_after: bool = F('Delete local HLO dump after uploading to GCS.')
  dump_hlo_gcs_dir: str = F('GCS directory to upload HLO dumps.')
  dump_hlo_module_name: str = F('Filter modules to dump by this name.')
  dump_hlo_local_module_name: str = F('Filter modules to save locally by this name.')
  dump_hlo_xla_flags: str = F('Pass custom XLA flags for HLO dumping.')
  dump_hlo_upload_all: bool = F('Upload HLO from all hosts.')
  dump_jaxpr: bool = F('Enable jaxpr dumping.')
  dump_jaxpr_local_dir: str = F('Local directory to dump jaxpr.')
  dump_jaxpr_delete_local_after: bool = F('Delete local jaxpr dump after uploading to GCS.')
  dump_jaxpr_gcs_dir: str = F('GCS directory to upload jaxpr dumps.')
  collect_stack_trace: bool = F('Periodically collect Python stack traces of all threads (debugging hangs).')
  stack_trace_to_cloud: bool = F('Send collected stack traces to cloud logging instead of a local file.')
  stack_trace_interval_seconds: int = F('Seconds between stack-trace collections.')
  rl: bool = F('Configuration for RL algorithms like Group Relative Policy Optimization (GRPO).')
