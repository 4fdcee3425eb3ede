"""Optimizer, learning-rate schedule and gradient processing."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class OptimizerSection(Section):
  """Optimizer, learning-rate schedule and gradient processing. (MaxText: Optimizer, AdamW, Muon.)"""

  section_name = "optimizer"

  opt_type: Literal['adamw', 'adam_pax', 'sgd', 'muon'] = F('The type of optimizer to use.')
  skip_step_on_spikes: bool = F('If True, skip the training step when loss or gradient spike is detected.')
  skip_step_interval: PosInt = F('The rolling interval to calculate the mean and standard deviation.')
  skip_step_scaling_factor: float = F('The scaling factor to determine if a spike occurred.')
  gradient_accumulation_steps: PosInt = F('Number of steps to accumulate gradients before updating.')
  use_tunix_gradient_accumulation: bool = F('Whether to use the Tunix implementation for gradient accumulation.')
  gradient_clipping_threshold: NonNegFloat = F('The threshold for gradient clipping. 0 disables clipping.')
  learning_rate: NonNegFloat = F('The peak learning rate.')
  lr_schedule_type: Literal['cosine', 'wsd'] = F('The type of learning rate schedule to use.')
  learning_rate_final_fraction: float = F('Final LR as a fraction of peak LR (applies to both cosine and WSD schedules).')
  wsd_decay_steps_fraction: float = F('Fraction of total steps for decay phase in WSD schedule.')
  wsd_decay_style: Literal['linear', 'cosine'] = F("The decay style for WSD schedule ('linear' or 'cosine').")
  warmup_steps_fraction: float = F('Fraction of total steps for LR warmup.')
  learning_rate_schedule_steps: int = F('Total steps for the LR schedule. -1 defaults to `steps`.')
  trainable_parameters_mask: list[str] = F("List of parameter names/patterns to train. If non-empty, all other parameters will be frozen, example: ['.*indexer.*']. If empty (default), all parameters are trained.")
  adam_b1: float = F('Exponential decay rate for the first moment of past gradients (beta1).')
  adam_b2: float = F('Exponential decay rate for the second moment of past gradients (beta2).')
  adam_eps: float = F('A small constant for numerical stability (epsilon), applied outside of the square root.')
  adam_eps_root: float = F('A small constant for numerical stability (epsilon), applied inside of the square root.')
  adam_weight_decay: float = F('Weight decay regularization.')
  adamw_mask: list[str] = F("List of parameter names/patterns to exclude from weight decay in AdamW, like ['bias', '.*norm', '.*ln.*']")
  mu_dtype: str = F("Data type for 'mu' (first moment) in AdamW. Inherits from weight_dtype if empty.")
  muon_beta: float = F('Decay rate for the exponentially weighted average of grads.')
  muon_weight_decay: float = F('Strength of the weight decay regularization. This is multiplied with the learning rate.')
  muon_consistent_rms: float | None = F('If None, apply width scaling to updates. If float, apply consistent rms scaling (recommend 0.2).')
