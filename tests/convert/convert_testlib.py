"""Helpers for conversion tests: tiny seeded transformers models with O(1) logits, and our side of the comparison."""

from __future__ import annotations

import numpy as np
import torch
import transformers

from maxtext_like.api import load_config, load_model

from hf_parity_lib import hf_greedy, our_greedy  # noqa: F401  (re-exported)

TINY = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
            head_dim=16, vocab_size=256, rms_norm_eps=1e-6)


def hf_model(config_cls, architecture: str, seed: int = 0, **kw):
  """A float32 eager-attention model whose weights are redrawn with larger scales (so the comparison can fail)."""
  cfg = config_cls(**{**TINY, **kw}, architectures=[architecture])
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.3 * torch.randn_like(p))
      elif "embed_tokens" in name:
        p.copy_(torch.randn_like(p))
      else:  # Linear [out, in] and fused experts [E, out, in]: fan-in is the last axis
        p.copy_(torch.randn_like(p) / np.sqrt(p.shape[-1]))
  model.generation_config.eos_token_id = None
  model.generation_config.pad_token_id = 0
  return model


def tokens(batch: int, length: int, seed: int = 0, vocab: int = 256) -> np.ndarray:
  return np.random.RandomState(seed).randint(1, vocab, (batch, length)).astype(np.int32)


def hf_logits(model, toks: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(toks, dtype=torch.long)).logits.float().numpy()


def our_model(ckpt_dir: str, model_yml: str, *extra: str):
  cfg = load_config(["base.yml", f"model_name={model_yml}", f"load_parameters_path={ckpt_dir}", *extra], env={})
  return load_model(cfg)

