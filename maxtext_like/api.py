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
  from maxtext_like.inference.loading import load_model as _load
  return _load(cfg)


def count_params(cfg: Config) -> int:
  from maxtext_like.models import count_params as _count
  from maxtext_like.runtime.model_spec import model_spec
  return _count(model_spec(cfg))


def generate(cfg: Config, prompts: Sequence[str], *, verbose: bool = False, with_log_probs: bool = False):
  """Continuations through the serving engine (continuous batching over min(len(prompts), slots) slots).

  Each prompt gets max_target_length - max_prefill_predict_length tokens at most and stops at EOS (with
  `use_chat_template`, a prompt is a user message in the model's chat template); without
  chunked prefill a prompt longer than max_prefill_predict_length keeps its last tokens. `with_log_probs`: a list of
  (text, per-token log-probs) instead of texts."""
  from maxtext_like.inference.batching import Batcher, Request
  from maxtext_like.inference.engine import Engine
  from maxtext_like.runtime.tokenizer import tokenizer_for
  inf = cfg.inference
  tok = tokenizer_for(cfg)
  loaded = load_model(cfg)
  if verbose:
    print(f"parameters: {loaded.source}", file=sys.stderr, flush=True)
  if cfg.tokenizer.use_chat_template:  # each prompt is one user message, rendered by the model's chat template
    from maxtext_like.serving.chat import ChatFormatter
    chat = ChatFormatter.for_config(cfg, tok)
    ids = [chat.encode([{"role": "user", "content": p}]) for p in prompts]
  else:
    ids = [tok.encode(p, add_eos=False) for p in prompts]
  if not inf.use_chunked_prefill:
    ids = [i[-inf.max_prefill_predict_length:] for i in ids]
  engine = Engine(cfg, loaded.model, num_slots=max(1, min(len(ids), Engine.slots_for(cfg))))
  del loaded  # the engine holds its own (unscanned) copy of the parameters; free the loaded layout's arrays
  batcher = Batcher.for_config(engine, cfg, tok.eos_id)
  budget = inf.max_target_length - inf.max_prefill_predict_length
  done = batcher.run([Request(list(i), max_tokens=budget) for i in ids])
  if with_log_probs:
    return [(tok.decode(seqs[0].tokens), seqs[0].log_probs) for seqs in done]
  return [tok.decode(seqs[0].tokens) for seqs in done]
