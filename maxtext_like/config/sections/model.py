"""Model architecture (dimensions, block type, logits, multi-token prediction)."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class ModelSection(Section):
  """Model architecture (dimensions, block type, logits, multi-token prediction). (MaxText: ModelArchitecture, MTP, Logits, ManifoldConstrainedHyperConnections, Engram.)"""

  section_name = "model"

  decoder_block: Literal['default', 'llama2', 'mistral', 'mixtral', 'deepseek', 'gemma', 'gemma2', 'gemma3', 'gemma4', 'gemma4_small', 'qwen2', 'qwen3', 'qwen3_moe', 'qwen3_custom_moe', 'qwen3_next', 'qwen3_5', 'gpt3', 'gpt_oss', 'simple', 'simple_mlp', 'llama4', 'olmo3', 'deepseek4', 'envy'] = F("The style of DecoderBlock to use (e.g., 'llama2', 'gemma').")
  global_parameter_scale: int = F('A global scaling factor for model dimensions.')
  base_emb_dim: int = F('Base embedding dimension.')
  base_num_query_heads: int = F('Base number of query heads.')
  base_num_kv_heads: int = F('Base number of key/value heads.')
  base_mlp_dim: int = F('Base dimension of the MLP layer.')
  dense_init_scale: float = F('Initialization scale for dense layers')
  base_num_decoder_layers: int = F('Base number of decoder layers.')
  head_dim: int = F('Model query and key head dimension.')
  attention_output_dim: int = F('Override output dimension for attention block if set to a positive value.')
  global_head_dim: int = F('Model query and key head dimension for global attention layers.')
  mlp_activations: list[str] = F('Activation functions in the MLP layer.')
  mlp_activations_limit: float = F('Upper bound to clip the MLP activation values. -1.0 means no clipping.')
  normalization_layer_epsilon: float = F('Epsilon value for normalization layers.')
  fused_qkv: bool = F('If supported, fuse the Q, K, and V projections.')
  attention_bias: bool = F('If True, adds a learnable bias to the query, key, and value projections.')
  fused_mlp: bool = F('If supported, fuse the MLP layers.')
  qk_norm_with_scale: bool = F('Whether to apply scale on query and key normalizations (default True).')
  v_norm_with_scale: bool = F('Whether to apply scale on value normalization (default True).')
  mtp_num_layers: NonNegInt = F('The number of auxiliary prediction layers to use for MTP.')
  mtp_loss_scaling_factor: NonNegFloat = F('The scaling factor (lambda) for the MTP auxiliary loss.')
  mtp_eval_target_module: NonNegInt = F('Specifies which MTP layer is used to calculate metrics.')
  logits_via_embedding: bool = F('If True, tie the embedding and unembedding matrices.')
  normalize_embedding_logits: bool = F('If logits_via_embedding is true, normalize pre-softmax logits.')
  logits_dot_in_fp32: bool = F('Use fp32 for the logits dot product for stability.')
  cast_logits_to_fp32: bool = F('Whether to cast the final logits to fp32.')
  final_logits_soft_cap: None | NonNegFloat = F('Soft-cap value for the final logits. None or 0.0 means no cap.')
  z_loss_multiplier: float = F('The multiplier for the z-loss (e.g., 1e-4). 0.0 to disable.')
  mhc_expansion_rate: PosInt = F('The number of parallel streams in Hyper Connection.')
  sinkhorn_iterations: PosInt = F('The number of iterations for the Sinkhorn-Knopp algorithm.')
  engram_layers: list[int] = F('Indices of transformer layers where Engram are integrated.')
  engram_num_heads: int = F('Number of heads dedicated to the Engram.')
  engram_head_dim: int = F('Head dimension for heads.')
  engram_vocab_bases: list[int] = F('List of minimum head vocab sizes for each n-gram order.')
  engram_max_ngram_size: int = F("The max 'n' in N-gram.")
  engram_kernel_size: int = F('Temporal window size for Engram convolution.')
  engram_seed: int = F('The seed for Engram hash mapping.')
