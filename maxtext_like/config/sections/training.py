"""The training loop: steps, logging, eval and seeds."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class TrainingSection(Section):
  """The training loop: steps, logging, eval and seeds. (MaxText: TrainingLoop, DilocoParams, ElasticTraining.)"""

  section_name = "training"

  steps: int = F('Total number of training steps. -1 defaults to learning_rate_schedule_steps.')
  log_period: int = F('Frequency (in steps) to log metrics and flush Tensorboard.')
  eval_interval: int = F('Run evaluation every N training steps. -1 disables interval-based evaluation.')
  eval_steps: int = F('Number of steps to run for each evaluation. -1 runs on entire eval split.')
  target_eval_loss: float = F('If set, training will stop early when this evaluation loss is reached.')
  abort_on_nan_loss: bool = F('Check for NaN values and abort training.')
  abort_on_inf_loss: bool = F('Check for Inf values and abort training.')
  enable_dropout: bool = F('Enables dropout in the model.')
  dropout_rate: float = F('The dropout rate.')
  enable_data_shuffling: bool = F('Enables shuffling of the training data.')
  data_shuffle_seed: int = F('Seed for data shuffling.')
  init_weights_seed: int = F('Seed for model weight initialization.')
  enable_diloco: bool = F('Enable Diloco parallelism')
  diloco_sync_period: int = F('Diloco sync period.')
  diloco_outer_lr: float = F('learning rate for outer optimizer.')
  diloco_outer_momentum: float = F('momentum for outer optimizer.')
  elastic_enabled: bool = F('Whether to enable elastic training.')
  elastic_timeout_seconds: int = F('The maximum number of seconds to wait for `elastic_minimum_slice_count` slices to become active. If this timeout is reached during any retry attempt, a `TimeoutError` is raised and training fails.')
  elastic_max_retries: int = F('The maximum number of times to retry training when a slice failure occurs or when scaling up.')
  elastic_min_slice_count: int = F('The minimum number of slices to wait for before starting training. -1 means wait for all slices.')
