"""Positional embeddings and rotary embedding variants."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class RopeSection(Section):
  """Positional embeddings and rotary embedding variants. (MaxText: PositionalEmbedding, Rope, YarnRope.)"""

  section_name = "rope"

  use_iota_embed: bool = F('Use iota operator in Embed, an efficient way to represent positions.')
  use_untrainable_positional_embedding: bool = F('Use untrainable sinusoidal positional embeddings.')
  trainable_position_size: int = F('Enables GPT-3 style trainable positional embeddings if positive.')
  nope_layer_interval: int = F('If positive, every N-th layer will NOT use RoPE (Llama4).')
  rope_type: Literal['default', 'llama3.1', 'yarn'] = F('The type of RoPE to use.')
  rope_use_scale: bool = F('Apply RoPE scaling for Llama3.1 style.')
  rope_llama31_factor: PosFloat = F('llama3.1 RoPE scaling: long wavelengths are divided by this (HF rope_scaling factor).')
  rope_llama31_low_freq_factor: PosFloat = F('llama3.1 RoPE scaling: wavelengths above original/low are fully scaled.')
  rope_llama31_high_freq_factor: PosFloat = F('llama3.1 RoPE scaling: wavelengths below original/high are kept.')
  rope_llama31_original_max_position: PosInt = F(
      'llama3.1 RoPE scaling: the pre-training context length (original_max_position_embeddings).')
  rope_min_timescale: int = F('The minimum timescale for RoPE.')
  rope_max_timescale: int = F('The maximum timescale for RoPE.')
  rope_linear_scaling_factor: float = F("Linear scaling factor for 'default' RoPE implementation.")
  local_rope_max_timescale: int = F('If positive, used for local window attention RoPE.')
  global_rope_max_timescale: int = F('If positive, used for global attention RoPE.')
  global_rope_proportion: float = F('Proportion of dimension to apply RoPE on in global layers.')
  local_rope_proportion: float = F('Proportion of dimension to apply RoPE on in local layers.')
  max_position_embeddings: int = F('The maximum position embeddings for YaRN scaling.')
  original_max_position_embeddings: int = F('The original max position embeddings before scaling.')
  rope_factor: int = F('The scaling factor for YaRN.')
  beta_fast: int = F("The 'beta_fast' parameter for YaRN.")
  beta_slow: int = F("The 'beta_slow' parameter for YaRN.")
  mscale: float = F("The 'mscale' parameter for YaRN.")
  rope_interleave: bool = F('Whether RoPE sin/cos are interleaved vs concatenated.')
  rope_truncate: bool = F('Whether to floor/ceil the correction range for YaRN.')
  rope_attention_scaling: bool = F('Scale the rotary embedding output. Used by some models like gpt-oss.')
