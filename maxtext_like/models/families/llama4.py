"""Llama 4 text (decoder_block 'llama4'; presets llama4-17b-16e Scout, llama4-17b-128e Maverick), as transformers'
`Llama4ForCausalLM`. The llama pre-norm layout (`LlamaDecoderLayer`), every layer built with its index:

- RoPE layers (all but every `nope_layer_interval`-th: layer i is NoPE iff (i + 1) % interval == 0):
  Meta's interleaved RoPE (pairs (x[2i], x[2i+1]), llama3.1 frequency scaling from rope_llama31_*), then with
  `use_qk_norm` each query and key head divided by its RMS (no learned scale, eps normalization_layer_epsilon),
  and chunked attention: a query sees the keys of its own chunk of `chunk_attn_window_size` positions.
- NoPE layers: no RoPE, no QK norm, global causal attention; with `temperature_tuning` the queries at position p
  are multiplied by 1 + 0.1 * log(1 + floor((p + 1) / 8192)) (HF attn_scale / floor_scale; MaxText hard-codes both).
  HF counts p from the cache length (arange), we from `positions` (equal unless sequences are packed).
- Feed-forward: MoE iff (i + 1) % interleave_moe_layer_step == 0, else a dense MLP of mlp_dim (HF
  intermediate_size_mlp). The MoE routes by the top-k router logits, weighted by their sigmoid, and the weight
  multiplies the expert's *input*; one shared expert (an MLP of base_moe_mlp_dim) is always added.
Layers repeat with period lcm(nope_layer_interval, interleave_moe_layer_step): one stack of that cycle, so the
scanned layout scans units of that many layers.

Hugging Face `Llama4ForCausalLM` (save_pretrained layout of transformers 5.24) maps as llama (families/llama.py:
embed, norms, q/k/v/o kernels, lm_head; no q/k permutation, RoPE is interleaved here) plus, per layer i:
  model.layers.i.feed_forward.{gate,up,down}_proj.weight    decoder.layers.i.mlp.wi_0 / wi_1 / wo .kernel = W.T
  model.layers.i.feed_forward.router.weight [E, D]          ....mlp.gate.kernel = W.T                    [D, E]
  model.layers.i.feed_forward.experts.gate_up_proj [E, D, 2F]  ....mlp.wi_0 = [..., :F], mlp.wi_1 = [..., F:]
  model.layers.i.feed_forward.experts.down_proj [E, F, D]   ....mlp.wo (same layout)
  model.layers.i.feed_forward.shared_expert.{gate,up,down}_proj.weight  ....mlp.shared_experts.wi_0 / wi_1 / wo
HF's intermediate_size is our base_moe_mlp_dim (experts and shared expert), intermediate_size_mlp our base_mlp_dim.
"""

from __future__ import annotations

import math

from flax import nnx

from maxtext_like.models.attention import Attention
from maxtext_like.models.family import Family, stack
from maxtext_like.models.families.llama import (NORM_ROWS, QK_NORM_ROWS, QKV_BIAS_ROWS, QKVO_ROWS, LlamaDecoderLayer,
                                               LlamaHF, mlp_rows)
from maxtext_like.models.hf_registry import HFConfigError, Table
from maxtext_like.models.mlp import MlpBlock
from maxtext_like.models.moe import MoeBlock
from maxtext_like.models.registry import ModelSpecError
from maxtext_like.models.spec import ModelSpec

# (floor_scale, attn_scale) of attention temperature tuning: HF's defaults, hard-coded by MaxText (no config keys).
TEMPERATURE_TUNING = (8192.0, 0.1)


def nope_interval(spec: ModelSpec) -> int:
  """Every this-many-th layer is NoPE (config key nope_layer_interval; <= 0: none)."""
  return max(spec.option("nope_layer_interval"), 0)


def is_nope_layer(spec: ModelSpec, i: int) -> bool:
  return nope_interval(spec) > 0 and (i + 1) % nope_interval(spec) == 0


def is_moe_layer(spec: ModelSpec, i: int) -> bool:
  return (i + 1) % spec.moe.interleave_moe_layer_step == 0


def cycle(spec: ModelSpec) -> int:
  """The period with which layers repeat (NoPE and MoE placement)."""
  return math.lcm(max(nope_interval(spec), 1), spec.moe.interleave_moe_layer_step)


def llama4_layer(spec: ModelSpec, *, rngs: nnx.Rngs, layer_index: int = 0) -> LlamaDecoderLayer:
  """Layer `layer_index` (its index modulo `cycle(spec)` is what matters; 0 when all layers are alike)."""
  nope = is_nope_layer(spec, layer_index)
  attn_spec = spec.replace(use_qk_norm=False)  # Llama 4's QK norm has no weights: qk_l2_norm below

  def attention(r):
    return Attention(attn_spec.attention_spec, rngs=r, nope=nope, rope_interleave=True, qk_l2_norm=spec.use_qk_norm and not nope,
                     chunk=0 if nope else spec.option("chunk_attn_window_size"),
                     temperature_tuning=TEMPERATURE_TUNING if nope and spec.option("temperature_tuning") else None)

  if is_moe_layer(spec, layer_index):
    mlp = lambda r: MoeBlock(spec.mlp_spec, spec.moe, rngs=r, sigmoid_topk_router=True, weights_on_inputs=True)  # noqa: E731
  else:
    mlp = lambda r: MlpBlock(spec.mlp_spec, rngs=r)  # noqa: E731
  return LlamaDecoderLayer(spec, rngs=rngs, attention=attention, mlp=mlp)


def layer_stacks(spec: ModelSpec):
  m = spec.moe
  if m is None:
    raise ModelSpecError("decoder_block='llama4' needs spec.moe (a MoeSpec)")
  unused = {k: v for k, v in (("first_num_dense_layers", m.first_num_dense_layers), ("norm_topk_prob", m.norm_topk_prob),
                              ("routed_bias", m.routed_bias), ("n_routing_groups", max(m.n_routing_groups, 0)))
            if v}
  if unused or m.routed_score_func not in ("", "sigmoid"):
    raise ModelSpecError(f"llama4 routes by sigmoid of the top-k logits; {unused or m.routed_score_func!r} "
                         "is not used by decoder_block='llama4'")
  return [stack("layers", spec.num_decoder_layers, cycle=cycle(spec))]


# ---- Hugging Face mapping ----------------------------------------------------------------------------------

class Llama4HF(LlamaHF):
  """Llama4ForCausalLM (model_type llama4_text): the text model of Llama 4 Scout / Maverick."""

  architectures = ("Llama4ForCausalLM",)
  layer_table = Table(NORM_ROWS, QKVO_ROWS, QKV_BIAS_ROWS, QK_NORM_ROWS,  # llama's, with the MLP under feed_forward
                      mlp_rows("feed_forward.", "mlp."), mlp_rows("feed_forward.shared_expert.", "mlp.shared_experts."), (
      ("feed_forward.router.weight", "mlp.gate.kernel", "T"),
      ("feed_forward.experts.gate_up_proj", ("mlp.wi_0", "mlp.wi_1"), "gate_up_halves"),  # [E, D, 2F]: gate, then up
      ("feed_forward.experts.down_proj", "mlp.wo", "copy"),  # [E, F, D], our layout
  ))

  def decoder_block_for(self, hf: dict) -> str:
    return "llama4"

  def family_keys(self, hf: dict, keys: dict) -> list[str]:
    problems = []
    L = int(hf["num_hidden_layers"])
    keys["base_mlp_dim"] = int(hf.get("intermediate_size_mlp", 16384))
    keys["base_moe_mlp_dim"] = int(hf["intermediate_size"])
    keys["num_experts"] = int(hf.get("num_local_experts", 16))
    keys["num_experts_per_tok"] = int(hf.get("num_experts_per_tok", 1))
    keys["shared_experts"] = 1
    step = int(hf.get("interleave_moe_layer_step", 1) or 1)
    keys["interleave_moe_layer_step"] = step
    if hf.get("moe_layers") is not None and list(hf["moe_layers"]) != list(range(step - 1, L, step)):
      problems.append(f"moe_layers={hf['moe_layers']} is not every {step}-th layer (interleave_moe_layer_step)")
    interval = int(hf.get("no_rope_layer_interval", 4) or 0)
    rope_layers = list(hf.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(L)])[:L]
    if all(rope_layers):
      keys["nope_layer_interval"] = -1
    elif interval > 0 and rope_layers == [int((i + 1) % interval != 0) for i in range(L)]:
      keys["nope_layer_interval"] = interval
    else:
      problems.append(f"no_rope_layers={rope_layers} is not every {interval}-th layer (nope_layer_interval)")
    chunk = hf.get("attention_chunk_size")
    keys["chunk_attn_window_size"] = int(chunk or 0)
    if hf.get("layer_types") is not None:
      want = ["chunked_attention" if r and chunk else "full_attention" for r in rope_layers]
      if list(hf["layer_types"])[:L] != want:
        problems.append(f"layer_types={hf['layer_types']} differs from RoPE layers chunked, NoPE layers full")
    keys["use_qk_norm"] = bool(hf.get("use_qk_norm", True))
    keys["temperature_tuning"] = bool(hf.get("attn_temperature_tuning", True))
    tuning = (float(hf.get("floor_scale", 8192)), float(hf.get("attn_scale", 0.1)))
    if keys["temperature_tuning"] and tuning != TEMPERATURE_TUNING:
      problems.append(f"(floor_scale, attn_scale)={tuning} of attn_temperature_tuning: only {TEMPERATURE_TUNING}")
    return problems

  def hf_config_from(self, spec: ModelSpec) -> dict:
    m = spec.moe
    if m is None or m.shared_experts != 1 or m.routed_scaling_factor != 1.0:
      raise HFConfigError("Llama4ForCausalLM has exactly one shared expert and no routed scaling")
    L = spec.num_decoder_layers
    cfg = {"architectures": ["Llama4ForCausalLM"], "model_type": "llama4_text", **self._common_config(spec)}
    cfg.update({
        "intermediate_size": m.mlp_dim, "intermediate_size_mlp": spec.mlp_dim,
        "num_local_experts": m.num_experts, "num_experts_per_tok": m.num_experts_per_tok,
        "interleave_moe_layer_step": m.interleave_moe_layer_step,
        "moe_layers": [i for i in range(L) if is_moe_layer(spec, i)],
        "no_rope_layer_interval": nope_interval(spec) or 4,  # HF: the list below wins
        "no_rope_layers": [int(not is_nope_layer(spec, i)) for i in range(L)],
        "attention_chunk_size": spec.option("chunk_attn_window_size") or None,
        "use_qk_norm": spec.use_qk_norm, "attn_temperature_tuning": spec.option("temperature_tuning"),
        "floor_scale": int(TEMPERATURE_TUNING[0]), "attn_scale": TEMPERATURE_TUNING[1],
        "attention_bias": False, "router_jitter_noise": 0.0, "output_router_logits": False,
        "router_aux_loss_coef": m.load_balance_loss_weight,
    })
    return cfg


FAMILY = Family(names=("llama4",), block=llama4_layer, hf=Llama4HF(), moe=True, layer_stacks=layer_stacks,
                spec_fields=("moe",),
                config_keys=("chunk_attn_window_size", "nope_layer_interval", "temperature_tuning"))
