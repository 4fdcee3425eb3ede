"""Shared helpers of the Hugging Face parity tests: our model with an HF model's weights, tokens, logits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from maxtext_like.inference.engine import generate_ids
from maxtext_like.inference.sampling import SamplingOptions
from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.hf_registry import state_dict_to_params  # generic: any family's registered mapping

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def our_model(spec: ModelSpec, hf, *, scan_layers: bool = False):
  """Our model with hf's weights (via the family's HF mapping), in the loop or scanned layout."""
  from maxtext_like.convert import layout
  spec = spec.replace(scan_layers=scan_layers)
  flat = state_dict_to_params(spec, {k: v.detach().numpy() for k, v in hf.state_dict().items()})
  model = nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  used = set()
  by_layer = sorted(flat, key=lambda p: [int(t) if t.isdigit() else t for t in p.split(".")])

  def fill(path, leaf):
    key = ".".join(str(p) for p in path)
    if spec.scan_layers and key.startswith("decoder.") and "layers." in key:  # any stack, units of its cycle
      names = [n for n in by_layer if layout.stacked_key(spec, n)[0] == key]
      value = np.stack([flat[n] for n in names], axis=spec.param_scan_axis)
    else:
      names = [key]
      value = flat[key]
    used.update(names)
    assert value.shape == leaf.shape, (key, value.shape, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  pure = nnx.to_pure_dict(state)
  pure = jax.tree_util.tree_map_with_path(lambda p, x: fill([k.key for k in p], x), pure)
  assert used == set(flat), sorted(set(flat) ^ used)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def tokens(batch: int, length: int, seed: int = 1, vocab: int = 128) -> np.ndarray:
  return np.random.default_rng(seed).integers(2, vocab, size=(batch, length)).astype(np.int32)


def hf_logits(hf, toks: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return hf(torch.from_numpy(toks.astype(np.int64))).logits.numpy()


def our_logits(model, toks: np.ndarray) -> np.ndarray:
  graphdef, state = nnx.split(model)
  return np.asarray(jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, jnp.asarray(toks)))


def hf_on_meta(spec: ModelSpec):
  """(transformers model on the meta device, its config) for the HF config our mapping writes for `spec`."""
  import transformers
  from maxtext_like.models.hf_registry import get_hf_mapping
  hf_config = transformers.AutoConfig.for_model(**{k: v for k, v in get_hf_mapping(spec.decoder_block)
                                                  .hf_config_from(spec).items() if k != "rope_scaling"})
  with torch.device("meta"):
    return transformers.AutoModelForCausalLM.from_config(hf_config), hf_config


def hf_param_count(spec: ModelSpec, *, buffers: bool = False) -> int:
  """Parameters (with `buffers`: every state_dict tensor, e.g. deepseek's e_score_correction_bias) of transformers'
  model for `spec`, built on the meta device; checks the model class is the config's architecture."""
  hf, hf_config = hf_on_meta(spec)
  assert type(hf).__name__ == hf_config.architectures[0]
  return sum(t.numel() for t in (hf.state_dict().values() if buffers else hf.parameters()))


def hf_model_for(spec: ModelSpec, seed: int = 0):
  """transformers' model for the HF config our mapping writes for `spec` (eager attention, float32, eval, greedy
  generation without EOS), initialised by transformers after `torch.manual_seed(seed)`; callers redraw weights."""
  import transformers
  from maxtext_like.models.hf_registry import get_hf_mapping
  c = get_hf_mapping(spec.decoder_block).hf_config_from(spec)
  arch = c.pop("architectures")[0]
  config = transformers.AutoConfig.for_model(**c)
  config.architectures = [arch]
  torch.manual_seed(seed)
  model = getattr(transformers, arch)._from_config(config, attn_implementation="eager", dtype=torch.float32)
  model.eval()
  model.generation_config.eos_token_id = None
  model.generation_config.pad_token_id = 0
  return model


def hf_greedy(hf, toks: np.ndarray, n: int) -> list[list[int]]:
  """transformers' greedy continuation of exactly n tokens for each row of toks."""
  with torch.no_grad():
    out = hf.generate(torch.tensor(toks, dtype=torch.long), max_new_tokens=n, min_new_tokens=n, do_sample=False)
  return out[:, toks.shape[1]:].tolist()


def our_greedy(model, toks: np.ndarray, n: int, max_prefill: int | None = None) -> list[list[int]]:
  """Our greedy continuation of n tokens per row (prefill padded to max_prefill, default the prompt length)."""
  P = toks.shape[1] if max_prefill is None else max_prefill
  return generate_ids(model, [list(map(int, r)) for r in toks], max_prefill=P, max_target=P + n, eos_id=None,
                      options=SamplingOptions())
