"""The generic mixture-of-experts decoder layer and its Hugging Face table rows, shared by MoE families.

`moe_decoder_layer` is the llama block (pre-norm attention + MLP) whose MLP is a `moe.MoeBlock`, or a dense
`MlpBlock` for the layers that stay dense: the `dense_layers` stack of `first_num_dense_layers`, and with
`interleave_moe_layer_step` = k > 1 every layer i with (i + 1) % k != 0. Interleaved layers form a stack with
`cycle=k`, so the scanned layout scans units of k layers (k - 1 dense, then one MoE) and the loop layout builds
each layer with its index.
"""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

from maxtext_like.models.family import LayerStack, stack
from maxtext_like.models.families.llama import LlamaDecoderLayer
from maxtext_like.models.mlp import MlpBlock
from maxtext_like.models.moe import MoeBlock, is_moe_layer
from maxtext_like.models.spec import ModelSpec


def moe_layer_stacks(spec: ModelSpec) -> list[LayerStack]:
  """One stack of MoE layers; `dense_layers` then `moe_layers` with first_num_dense_layers; with
  interleave_moe_layer_step = k > 1 one stack of period k whose layers choose by index (`moe.is_moe_layer`)."""
  m = spec.moe
  if m is None:
    raise ValueError(f"decoder_block={spec.decoder_block!r} needs spec.moe (a MoeSpec)")
  if m.interleave_moe_layer_step != 1:
    return [stack("layers", spec.num_decoder_layers, cycle=m.interleave_moe_layer_step)]
  n_dense = min(m.first_num_dense_layers, spec.num_decoder_layers)
  return [stack("dense_layers", n_dense, moe=False), stack("moe_layers", spec.num_decoder_layers - n_dense, moe=True)] \
      if n_dense else [stack("layers", spec.num_decoder_layers)]


def moe_decoder_layer(spec: ModelSpec, *, rngs: nnx.Rngs, moe: bool = True, layer_index: int | None = None,
                      attention: Callable[[nnx.Rngs], nnx.Module] | None = None, **moe_options) -> LlamaDecoderLayer:
  """The llama block with a MoeBlock (or, for a dense layer, an MlpBlock); `moe_options` go to the MoeBlock."""
  if moe and (layer_index is None or is_moe_layer(spec, layer_index)):
    mlp = lambda r: MoeBlock(spec.mlp_spec, spec.moe, rngs=r, **moe_options)  # noqa: E731
  else:
    mlp = lambda r: MlpBlock(spec.mlp_spec, rngs=r)  # noqa: E731
  return LlamaDecoderLayer(spec, rngs=rngs, attention=attention, mlp=mlp)


def hf_expert_rows(hf: str, names: dict[str, str]) -> tuple:
  """hf_registry table rows of a MoeBlock: HF's router `{hf}gate.weight` -> mlp.gate.kernel, and one torch Linear
  weight per expert `{hf}experts.{e}.<name>.weight` -> slice e of our stacked mlp.wi_0 / wi_1 / wo [E, ...];
  `names` maps the HF expert weight names to ours (w1 -> wi_0, ...)."""
  return ((f"{hf}gate.weight", "mlp.gate.kernel", "T"),
          *((f"{hf}experts.{{e}}.{h}.weight", f"mlp.{o}", "T") for h, o in names.items()))


def hf_moe_keys(hf: dict, num_experts_key: str) -> dict:
  """num_experts / num_experts_per_tok config keys from an HF config.json."""
  E = hf.get(num_experts_key) or hf.get("num_local_experts") or hf.get("num_experts")
  return {"num_experts": int(E), "num_experts_per_tok": int(hf["num_experts_per_tok"])}
