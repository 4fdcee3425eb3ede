"""Fine-tuning and distillation."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class FinetuneSection(Section):
  """Fine-tuning and distillation. (MaxText: FineTuning, Distillation.)"""

  section_name = "finetune"

  use_dpo: bool = F('If True, enables Direct Preference Optimization training.')
  dpo_label_smoothing: float = F('Label smoothing for DPO.')
  dpo_beta: float = F('Beta parameter for DPO.')
  dpo_algo: Literal['dpo', 'orpo'] = F("Preference algorithm with use_dpo: 'dpo' (against a frozen reference) or 'orpo' (odds ratio plus SFT on the chosen; no reference). MaxText: dpo.algo.")
  orpo_lambda: float = F('Weight for preference loss in ORPO.')
  max_prompt_length: int | None = F('Maximum length for prompt. If None, defaults to half of max_target_length.')
  use_sft: bool = F('If True, enables Supervised Fine-Tuning.')
  sft_train_on_completion_only: bool = F('If True, trains only on the completion part of the text.')
  formatting_func_path: str = F('Path to the custom data formatting function for SFT.')
  formatting_func_kwargs: dict = F('Keyword arguments to pass to the custom data formatting function for SFT.')
  use_grpo: None | bool = F('If True, enables Group Relative Policy Optimization.')
  student_overrides: dict[str, Any] = F("Overrides specific to the Student model (e.g., {'num_query_heads': 16}).")
  teacher_overrides: dict[str, Any] = F("Overrides specific to the Teacher model (e.g., {'num_query_heads': 64}).")
  offline_data_dir: str | None = F('GCS or local path to the pre-generated ArrayRecord teacher data.')
  distill_alpha: float = F('Weight for the distillation loss component.')
  distill_temperature: float = F('Temperature for distillation softening.')
  distill_beta: float = F('Weight for the feature loss component. Use 0.0 to disable')
  distill_feature_loss_type: Literal['cosine', 'l2'] = F("The type of loss to use for feature distillation ('cosine' or 'l2').")
  distill_layer_indices: None | list = F('Feature indices for feature loss.')
  distill_alpha_end: float | None = F('Target alpha at end of training. None keeps alpha fixed.')
  distill_alpha_schedule: Literal['constant', 'linear', 'cosine'] = F("Schedule type for alpha annealing ('constant', 'linear', or 'cosine').")
  distill_temperature_end: float | None = F('Target temperature at end of training. None keeps temperature fixed.')
  distill_temperature_schedule: Literal['constant', 'linear', 'cosine'] = F("Schedule type for temperature annealing ('constant', 'linear', or 'cosine').")
  distill_beta_end: float | None = F('Target beta_feature at end of training. None keeps beta fixed.')
  distill_beta_schedule: Literal['constant', 'linear', 'cosine'] = F("Schedule type for beta annealing ('constant', 'linear', or 'cosine').")
  learn_to_init_mode: bool = F('Runs in the learn-to-init mode only')
  lti_use_general_linear_map: bool = F('enable general map (i.e. single learnable projection instead of the bi-linear mapping. Needs much more HBM.')
  distill_weights_copy_map: dict[str, Any] = F('Dictionary of copying original teacher weights to the student model.')
  distill_student_weights_share_map: dict[str, Any] = F('Experimental weight sharing map inside the student model for learn-to-init phase')
  student_params_to_update: None | list = F('a list of model param name templates to finetune in the student model. The other parameters will be frozen if this attribute is non empty)')
  enable_lora: bool = F('If True, enables LoRA/QLoRA during fine-tuning (qwix LoraProvider; only adapters are trained). Also accepted in a nested `lora:` block.')
  lora_rank: NonNegInt = F('LoRA rank. Set >0 when LoRA is enabled.')
  lora_alpha: NonNegFloat = F('LoRA alpha scaling factor (the update is scaled by lora_alpha / lora_rank).')
  lora_module_path: str = F("Regex over module paths (decoder/layers/.../self_attention/query) naming the LoRA targets; '' picks the family's default.")
  lora_weight_qtype: str | None = F('Optional quantization type of the frozen base for QLoRA (nf4, int4, int8, fp8). If set, QLoRA is applied.')
  lora_tile_size: int | None = F('Tile size of the base\'s block-wise quantization (QLoRA), along the contraction. Typically 32 or 64.')
  lora_restore_path: str = F('Optional path to LoRA weights (an adapter checkpoint step dir) to load before training. Ignored if the current run is resumed.')
