"""Run identity, output locations and logging."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class RunSection(Section):
  """Run identity, output locations and logging. (MaxText: RunInfo.)"""

  section_name = "run"

  base_config: None | str = F('Base config to inherit from. This is a meta-field and is consumed by the config loading system.')
  run_name: str = F('The name of the run. Checkpoints will be stored under this name.')
  model_name: str = F('The name of the model configuration to use.')
  override_model_config: bool = F('If True, allows overriding model parameters via CLI.')
  override_logical_axis_rules: bool = F('If True, logical_axis_rules will be overridden instead of merged.')
  log_config: bool = F('If True, prints the final configuration after initialization.')
  debug_sharding: bool = F('If True, print model weight sharding details.')
  base_output_directory: str = F("Base directory for all outputs, typically a GCS path. MaxText: ''. Local directory so a fresh checkout writes somewhere sensible.")
  sharding_strategy: None | Literal['experimental'] = F('Experimental sharding strategy used for some inference configs.')
