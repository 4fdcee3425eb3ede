"""Values computed from the validated keys by `maxtext_like.config.derived.derive` (read-only, source 'derived')."""

from maxtext_like.config.sections._base import F, Section


class DerivedSection(Section):
  """Computed, never set by hand. Device-dependent values (mesh fill-in, global batch) live in `resolve.Plan`."""

  section_name = "derived"

  emb_dim: int = F("base_emb_dim scaled by global_parameter_scale.")
  num_query_heads: int = F("base_num_query_heads scaled by global_parameter_scale.")
  num_kv_heads: int = F("base_num_kv_heads scaled by global_parameter_scale.")
  mlp_dim: int = F("base_mlp_dim scaled by global_parameter_scale.")
  moe_mlp_dim: int = F("base_moe_mlp_dim scaled by global_parameter_scale.")
  num_decoder_layers: int = F("base_num_decoder_layers scaled by global_parameter_scale.")
  run_name: str = F("run_name, or 'run_<UTC timestamp>' when it is empty.")
  checkpoint_dir: str = F("base_output_directory/run_name/checkpoints.")
  metrics_dir: str = F("base_output_directory/run_name/metrics.")
  tensorboard_dir: str = F("base_output_directory/run_name/tensorboard.")
  learning_rate_schedule_steps: int = F("learning_rate_schedule_steps, or steps when it is -1.")
  steps: int = F("steps, or learning_rate_schedule_steps when steps is -1.")
  eval_per_device_batch_size: float = F("eval_per_device_batch_size, or per_device_batch_size when it is 0.")
  using_pipeline_parallelism: bool = F("True when any ici/dcn pipeline parallelism is above 1.")
