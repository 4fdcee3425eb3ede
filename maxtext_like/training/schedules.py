"""Learning-rate schedules and the optimizer, from `cfg.optimizer` (MaxText's semantics)."""

from __future__ import annotations

import fnmatch

import jax
import jax.numpy as jnp
import optax

from maxtext_like.config.sections.optimizer import OptimizerSection


def learning_rate_schedule(o: OptimizerSection, schedule_steps: int) -> optax.Schedule:
  """Linear warmup to learning_rate, then cosine (or WSD: stable then linear/cosine decay) to
  learning_rate * learning_rate_final_fraction at schedule_steps; constant after that."""
  peak, final = o.learning_rate, o.learning_rate * o.learning_rate_final_fraction
  warmup = int(o.warmup_steps_fraction * schedule_steps)
  rest = max(schedule_steps - warmup, 1)
  warm = optax.linear_schedule(0.0, peak, warmup) if warmup else None
  if o.lr_schedule_type == "cosine":
    decay = optax.cosine_decay_schedule(peak, rest, alpha=o.learning_rate_final_fraction)
    parts, bounds = [decay], []
  else:
    decay_steps = max(int(o.wsd_decay_steps_fraction * schedule_steps), 1)
    stable = max(rest - decay_steps, 0)
    if o.wsd_decay_style == "linear":
      decay = optax.linear_schedule(peak, final, decay_steps)
    else:
      decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=o.learning_rate_final_fraction)
    parts, bounds = [optax.constant_schedule(peak), decay], [stable]
  if warm is not None:
    parts, bounds = [warm, *parts], [warmup, *[warmup + b for b in bounds]]
  return optax.join_schedules(parts, bounds) if bounds else parts[0]


def _path_matches(path: str, patterns: list[str]) -> bool:
  return any(fnmatch.fnmatch(path, p) or p in path for p in patterns)


def _mask(params, patterns: list[str], default: bool):
  """True for parameters whose dotted path matches a pattern (default when there are no patterns)."""
  def leaf(path, _):
    name = ".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
    return default if not patterns else _path_matches(name, patterns)
  return jax.tree_util.tree_map_with_path(leaf, params)


def make_optimizer(o: OptimizerSection, schedule_steps: int, params) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation and its schedule. `params` (abstract is fine) shapes the masks."""
  lr = learning_rate_schedule(o, schedule_steps)
  decay_mask = _mask(params, list(o.adamw_mask), True)
  if o.opt_type == "adamw":
    opt = optax.adamw(lr, b1=o.adam_b1, b2=o.adam_b2, eps=o.adam_eps, eps_root=o.adam_eps_root,
                      weight_decay=o.adam_weight_decay, mask=decay_mask, mu_dtype=o.mu_dtype or None)
  elif o.opt_type == "adam_pax":
    # Pax-style Adam: bias-corrected moments, decoupled weight decay scaled by the learning rate.
    opt = optax.chain(optax.scale_by_adam(b1=o.adam_b1, b2=o.adam_b2, eps=o.adam_eps, eps_root=o.adam_eps_root),
                      optax.add_decayed_weights(o.adam_weight_decay, mask=decay_mask), optax.scale_by_learning_rate(lr))
  elif o.opt_type == "sgd":
    opt = optax.sgd(lr)
  elif o.opt_type == "muon":
    opt = optax.contrib.muon(lr, beta=o.muon_beta, weight_decay=o.muon_weight_decay, adam_b1=o.adam_b1, adam_b2=o.adam_b2,
                             eps=o.adam_eps, consistent_rms=o.muon_consistent_rms)
  else:  # pragma: no cover - the schema's Literal forbids it
    raise ValueError(o.opt_type)
  chain = [optax.clip_by_global_norm(o.gradient_clipping_threshold)] if o.gradient_clipping_threshold > 0 else []
  opt = optax.chain(*chain, opt)
  if o.trainable_parameters_mask:
    trainable = _mask(params, list(o.trainable_parameters_mask), True)
    labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
    opt = optax.multi_transform({"train": opt, "freeze": optax.set_to_zero()}, labels)
  return opt, lr
