"""Checkpoint saving, loading and storage."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class CheckpointingSection(Section):
  """Checkpoint saving, loading and storage. (MaxText: Checkpointing, OrbaxStorage, EmergencyCheckpointing.)"""

  section_name = "checkpointing"

  load_parameters_path: str = F('Loads only model parameters from a specific checkpoint path.')
  lora_input_adapters_path: str = F('A LoRA adapter to serve on the base model (decode, api): an adapter checkpoint step dir, or a PEFT adapter dir (adapter_config.json). MaxText: a parent dir of adapters.')
  hf_lora_adapter_path: str = F('A Hugging Face PEFT adapter dir (adapter_config.json + adapter_model.safetensors) that LoRA training starts from.')
  load_full_state_path: str = F('Loads the complete training state from a checkpoint path.')
  enable_checkpointing: bool = F('If True, enables saving checkpoints during training.')
  load_checkpoint_only_once: bool = F('If True, deep copy the reference model to the actor model.')
  async_checkpointing: bool = F('If True, uses an asynchronous checkpointer for performance.')
  checkpoint_period: int = F('The frequency (in steps) at which to save checkpoints.')
  max_num_checkpoints_to_keep: int | None = F('Maximum number of checkpoints to keep.')
  enable_single_replica_ckpt_restoring: bool = F('One replica reads and broadcasts the checkpoint.')
  checkpoint_todelete_subdir: str | None = F('Subdirectory to move checkpoints to before deletion. (Ignored if directory is prefixed with gs://)')
  checkpoint_todelete_full_path: str | None = F('Full path to move checkpoints to before deletion.')
  force_unroll: bool = F('During param-only checkpoint generation, whether to unroll the loop.')
  checkpoint_is_quantized: bool = F('Set to True if reading from a saved AQT quantized checkpoint.')
  save_quantized_params_path: str = F('Path to save params quantized on the fly.')
  enable_orbax_v1: bool = F('DEPRECATED: Orbax v1 is always used for checkpointing; this flag is ignored.')
  checkpoint_conversion_fn: None | str = F('Function for processing loaded checkpoint dict.')
  source_checkpoint_layout: Literal['orbax', 'safetensors'] = F('The layout of the source checkpoint to load.')
  save_checkpoint_on_completion: bool = F('If True, saves a final checkpoint upon training completion.')
  enable_continuous_checkpointing: bool = F('If True, enables continuous checkpointing.')
  colocated_python_checkpointing: bool = F('If True, enables checkpointing from remote TPU VMs instead of head node on pathways.')
  enable_autocheckpoint: bool = F('If True, enables autocheckpoint or preemption induced checkpointing.')
  checkpoint_storage_target_data_file_size_bytes: int = F('Target file size for chunking large arrays in Orbax.')
  checkpoint_storage_use_ocdbt: bool = F('Whether to use the OCDbT storage format for checkpoints.')
  checkpoint_storage_use_zarr3: bool = F('Whether to use Zarr3 with OCDbT. Requires use_ocdbt=True.')
  checkpoint_storage_concurrent_gb: int = F('Concurrent GB for I/O operations during checkpointing.')
  enable_multi_tier_checkpointing: bool = F('Enables multi-tier checkpointing (local and persistent).')
  local_checkpoint_directory: str = F('Local directory for emergency checkpoints.')
  local_checkpoint_period: NonNegInt = F('Frequency (in steps) for local emergency checkpoints.')
  multi_tier_checkpointing_backup_interval_minutes: None | NonNegInt = F('Interval in minutes to back up local checkpoints to persistent storage.')
  mtc_data_parallelism: int = F('Number of identical pipelines in the job for multi-tier checkpointing. 0 defaults to num_slices.')
  enable_emergency_checkpoint: bool = F('Legacy flag for enabling emergency checkpointing. Prefer `enable_multi_tier_checkpointing`.')
  use_replicator_service: bool = F('Whether to use emergency checkpointing with the replicator service.')
  replicator_backup_interval_minutes: NonNegInt = F('Interval in minutes to back up local checkpoints.')
