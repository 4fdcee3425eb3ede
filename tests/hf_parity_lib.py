"""Shared helpers of the Hugging Face tests: tiny transformers models with O(1) weights, their checkpoint tensors
loaded into our model through the family's mapping, tokens, logits, greedy generation, meta-device counts."""

from __future__ import annotations

import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import yaml
from flax import nnx

from maxtext_like.inference.static_batch import generate_ids
from maxtext_like.inference.sampling import SamplingOptions
from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.hf_registry import get_hf_mapping, mapping_for_architecture

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


# ---- transformers' side -------------------------------------------------------------------------------------

def hf_model_for(spec: ModelSpec, seed: int = 0):
  """transformers' model for the HF config our mapping writes for `spec` (eager attention, float32, eval, greedy
  generation without EOS), initialised by transformers after `torch.manual_seed(seed)`; callers redraw weights."""
  import transformers
  c = get_hf_mapping(spec.decoder_block).hf_config_from(spec)
  arch = c.pop("architectures")[0]
  config = transformers.AutoConfig.for_model(**c)
  config.architectures = [arch]
  torch.manual_seed(seed)
  return _ready(getattr(transformers, arch)._from_config(config, attn_implementation="eager", dtype=torch.float32))


def hf_model_from(architecture: str, seed: int = 0, **config):
  """transformers' `architecture` for a config of these keyword arguments (eager attention, float32, eval, greedy
  generation without EOS), initialised by transformers after `torch.manual_seed(seed)`; callers redraw weights."""
  import transformers
  cls = getattr(transformers, architecture)
  cfg = cls.config_class(**config, architectures=[architecture])
  torch.manual_seed(seed)
  return _ready(cls._from_config(cfg, attn_implementation="eager", dtype=torch.float32))


def _ready(model):
  model.eval()
  model.generation_config.eos_token_id = None
  model.generation_config.bos_token_id = None
  model.generation_config.pad_token_id = 0
  return model


def hf_config(hf) -> dict:
  """hf's config.json as a dict, with its architecture."""
  c = hf.config.to_dict()
  c["architectures"] = [type(hf).__name__]
  return c


def hf_tensors(hf) -> dict[str, np.ndarray]:
  """The tensors of hf's checkpoint, as `save_pretrained` writes them (per-expert layout, tied lm_head left out)."""
  from maxtext_like.convert.safetensors_io import iter_tensors
  out = {}
  with tempfile.TemporaryDirectory() as d:
    hf.save_pretrained(d)
    for f in sorted(os.listdir(d)):
      if f.endswith(".safetensors"):
        out.update({k: np.array(v, np.float32) for k, v in iter_tensors(os.path.join(d, f))})
  return out


def hf_logits(hf, toks: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return hf(torch.from_numpy(toks.astype(np.int64))).logits.float().numpy()


def hf_greedy(hf, toks: np.ndarray, n: int) -> list[list[int]]:
  """transformers' greedy continuation of exactly n tokens for each row of toks."""
  with torch.no_grad():
    out = hf.generate(torch.tensor(toks, dtype=torch.long), max_new_tokens=n, min_new_tokens=n, do_sample=False)
  return out[:, toks.shape[1]:].tolist()


def hf_on_meta(spec: ModelSpec):
  """(transformers model on the meta device, its config) for the HF config our mapping writes for `spec`."""
  import transformers
  c = get_hf_mapping(spec.decoder_block).hf_config_from(spec)
  arch = c.pop("architectures")[0]
  hf_config = transformers.AutoConfig.for_model(**c)
  hf_config.architectures = [arch]
  with torch.device("meta"):
    return getattr(transformers, arch)(hf_config), hf_config


def hf_param_count(spec: ModelSpec) -> int:
  """Parameters (a tied lm_head once) and persistent buffers (e.g. deepseek's e_score_correction_bias, a parameter
  of ours) of transformers' model for `spec`, built on the meta device."""
  hf, _ = hf_on_meta(spec)
  saved = hf.state_dict()
  return sum(p.numel() for p in hf.parameters()) + sum(b.numel() for n, b in hf.named_buffers() if n in saved)


# ---- O(1) weights (each family's tests drew them their own way; kept, so measured numbers stay valid) ----------

def redraw_llama(model):
  """Norm weights 1 + N(0, 0.2^2), biases N(0, 0.3^2), embeddings N(0, 1), other weights N(0, 1/fan_in) with the
  fan-in on the last axis (torch Linear [out, in], fused experts [E, out, in]); torch's global RNG (as left by
  `hf_model_from(..., seed)`)."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.3 * torch.randn_like(p))
      elif "embed_tokens" in name:
        p.copy_(torch.randn_like(p))
      else:
        p.copy_(torch.randn_like(p) / np.sqrt(p.shape[-1]))
  return model


def redraw_normal(model, std: float = 0.25, embed_std: float = 0.25):
  """Every weight N(0, std^2) (Gemma's norms are `1 + w`), embeddings N(0, embed_std^2); torch's global RNG."""
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, std)
    model.get_input_embeddings().weight.normal_(0.0, embed_std)
  return model


def redraw_layernorm(model, std: float = 0.25, embed_std: float = 0.5):
  """Linear weights N(0, std^2), norm weights 1 + N(0, 0.2^2), norm and other biases N(0, 0.1^2), embeddings
  N(0, embed_std^2); torch's global RNG."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or ".ln_" in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p)) if name.endswith("weight") else p.normal_(0.0, 0.1)
      elif name.endswith("bias"):
        p.normal_(0.0, 0.1)
      else:
        p.normal_(0.0, std)
    model.get_input_embeddings().weight.normal_(0.0, embed_std)
  return model


def redraw_fan_in(model, seed: int = 0, scale: float = 0.5):
  """Norm weights 1 + N(0, 0.2^2), every other weight scale * N(0, 1/fan_in) (fan-in: the last axis), deepseek's
  e_score_correction_bias N(0, 0.1^2); a torch.Generator at `seed`."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
      else:
        p.copy_(scale * torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    for name, b in model.named_buffers():
      if "e_score_correction_bias" in name:
        b.copy_(0.1 * torch.randn(b.shape, generator=g))
  return model


def redraw_llama4(model, seed: int = 0):
  """Norm weights 1 + N(0, 0.2^2), embeddings N(0, 1), kernels N(0, 1/fan_in) (fan-in: the last axis of a torch
  Linear, axis 1 of the fused [E, in, out] experts); a torch.Generator at `seed`."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
      elif "embed_tokens" in name:
        p.copy_(torch.randn(p.shape, generator=g))
      else:
        fan_in = p.shape[1] if "experts." in name else p.shape[-1]
        p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
  return model


# ---- our side -----------------------------------------------------------------------------------------------

def spec_from_hf(hf_cfg: dict, *overrides: str, tmp_dir: str | None = None) -> ModelSpec:
  """Our spec for an HF config.json dict as the converter gives it: the family's model_keys_from_hf written as a
  model.yml preset, loaded by the config system (dot_product attention, no remat) with `overrides`."""
  from maxtext_like.config import load_config
  from maxtext_like.runtime.model_spec import model_spec
  keys = mapping_for_architecture(hf_cfg["architectures"][0]).model_keys_from_hf(hf_cfg)
  with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
    yml = os.path.join(d, "model.yml")
    with open(yml, "w") as f:
      yaml.safe_dump(keys, f)
    return model_spec(load_config(["base.yml", f"model_name={yml}", "attention=dot_product", "remat_policy=none",
                                   *overrides], env={}))


def our_params(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Our loop-layout flat params ('decoder.layers.0....') from HF checkpoint tensors via the family's mapping, each
  produced once (expert slices 'path[e]' assembled, each index once), as the converter places them."""
  from maxtext_like.convert import layout
  mapping = get_hf_mapping(spec.decoder_block)
  loop = spec.replace(scan_layers=False)
  shapes = layout.flat_shapes(loop)
  flat: dict[str, np.ndarray] = {}
  slices: dict[str, set] = {}
  for name, array in tensors.items():
    produced = mapping.to_ours(loop, name, np.asarray(array))
    assert produced is not None, f"unexpected HF tensor {name!r}"
    for path, value in produced:
      path, index = layout.split_slice(path)
      if index is None:
        assert path not in flat, f"{path!r} produced twice"
        flat[path] = value
      else:
        assert index not in slices.setdefault(path, set()), f"{path}[{index}] produced twice"
        slices[path].add(index)
        flat.setdefault(path, np.zeros(shapes[path], np.float32))[index] = value
  assert set(flat) == set(shapes), (sorted(set(shapes) - set(flat)), sorted(set(flat) - set(shapes)))
  assert all(len(ix) == shapes[p][0] for p, ix in slices.items())
  return flat


def our_model(spec: ModelSpec, hf, *, scan_layers: bool = False):
  """Our model with hf's checkpoint tensors (a transformers model, or its `hf_tensors`) mapped in, in the loop or
  scanned layout (stacked by the converter's layout functions)."""
  from maxtext_like.convert import layout
  spec = spec.replace(scan_layers=scan_layers)
  flat = our_params(spec, hf if isinstance(hf, dict) else hf_tensors(hf))
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


def load_converted(ckpt_dir: str, *overrides: str):
  """`api.load_model` of a `to_maxtext` output: its model.yml as the preset, its parameters."""
  from maxtext_like.api import load_config, load_model
  return load_model(load_config(["base.yml", f"model_name={ckpt_dir}/model.yml", f"load_parameters_path={ckpt_dir}",
                                 *overrides], env={}))


def random_model(spec: ModelSpec, seed: int = 0, scale: float = 0.3, norm_mean: float = 0.0):
  """Our model with N(0, scale^2) parameters (norm scales around `norm_mean`) drawn by numpy (no initializer
  compiles)."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def draw(path, s):
    mean = norm_mean if "scale" in jax.tree_util.keystr(path) else 0.0
    return jnp.asarray(mean + rng.normal(size=s.shape) * scale, s.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def tokens(batch: int, length: int, seed: int = 1, vocab: int = 128) -> np.ndarray:
  return np.random.default_rng(seed).integers(2, vocab, size=(batch, length)).astype(np.int32)


def our_logits(model, toks: np.ndarray) -> np.ndarray:
  graphdef, state = nnx.split(model)
  return np.asarray(jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, jnp.asarray(toks)))


def our_cached_logits(model, toks: np.ndarray, prefill: int, max_length: int) -> np.ndarray:
  """Logits [B, T, V] of `toks` through the KV cache: the first `prefill` tokens prefilled together, then one
  token per decode step (jitted)."""
  graphdef, state = nnx.split(model)
  run_prefill = jit(lambda s, t: nnx.merge(graphdef, s).prefill(t, max_length=max_length))
  run_step = jit(lambda s, t, c: nnx.merge(graphdef, s).decode_step(t, c))
  logits, cache = run_prefill(state, jnp.asarray(toks[:, :prefill]))
  out = [np.asarray(logits)]
  for t in range(prefill, toks.shape[1]):
    logits, cache = run_step(state, jnp.asarray(toks[:, t:t + 1]), cache)
    out.append(np.asarray(logits))
  return np.concatenate(out, axis=1)


def our_greedy(model, toks: np.ndarray, n: int, max_prefill: int | None = None) -> list[list[int]]:
  """Our greedy continuation of n tokens per row (prefill padded to max_prefill, default the prompt length)."""
  P = toks.shape[1] if max_prefill is None else max_prefill
  return generate_ids(model, [list(map(int, r)) for r in toks], max_prefill=P, max_target=P + n, eos_id=None,
                      options=SamplingOptions())
