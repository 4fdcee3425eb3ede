"""The public Python API of maxtext_like (documented in docs/api.md).

- `load_config(argv)`: the validated `Config` from the same arguments the entry points take; raises `ConfigError`.
- `load_model(cfg)`: a model whose parameters come from `load_parameters_path`, else the latest checkpoint of
  `run_name`, else the seeded init; `.logits(tokens)` maps int32 [B, T] to float32 [B, T, V].
- `generate(cfg, prompts)`: continuations of the prompts as text, with the config's sampling settings.
- `count_params(cfg)`: the model's parameter count from shapes only (no memory).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from maxtext_like.config import Config, ConfigError
from maxtext_like.config import load_config as _load_config

__all__ = ["Config", "ConfigError", "count_params", "generate", "load_config", "load_model"]


def load_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Config:
  """Load and validate a config from `argv` (e.g. `["base.yml", "model_name=llama3-8b", "steps=10"]`).

  `env` defaults to `os.environ` (for `M_<KEY>` overrides). Raises `ConfigError` listing every problem.
  """
  return _load_config(list(argv), env=env)


def load_model(cfg: Config):
  from maxtext_like.inference.engine import load_model as _load
  return _load(cfg)


def count_params(cfg: Config) -> int:
  from maxtext_like.models import count_params as _count
  from maxtext_like.runtime.model_spec import model_spec
  return _count(model_spec(cfg))


def generate(cfg: Config, prompts: Sequence[str], *, verbose: bool = False) -> list[str]:
  from maxtext_like.inference.engine import generate_ids, sampling_options
  from maxtext_like.runtime.tokenizer import tokenizer_for
  tok = tokenizer_for(cfg)
  loaded = load_model(cfg)
  if verbose:
    print(f"parameters: {loaded.source}", file=sys.stderr, flush=True)
  ids = [tok.encode(p, add_eos=False) for p in prompts]
  out = generate_ids(loaded.model, ids, max_prefill=cfg.inference.max_prefill_predict_length,
                     max_target=cfg.inference.max_target_length, eos_id=tok.eos_id, options=sampling_options(cfg),
                     seed=cfg.training.data_shuffle_seed)
  return [tok.decode(o) for o in out]
