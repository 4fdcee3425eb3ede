"""DPO and ORPO: the loss of a batch of (chosen, rejected) pairs (DPO against a frozen reference model).

    z = beta * ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected)))
    loss = -(1 - label_smoothing) * log sigmoid(z) - label_smoothing * log sigmoid(-z)      (mean over pairs)

log pi(y) sums the log-probabilities of the response tokens (targets_segmentation != 0; the shared prompt is masked by
the data pipeline, data/pair_pipeline.py). At the start the policy is the reference, so z = 0 and the loss is ln 2
whatever beta and label_smoothing are.

The reference is a frozen copy of the starting policy kept in the train state ("reference_params", same shardings as
"params", outside the optimizer, saved with checkpoints so a resumed run keeps the same reference). The alternative,
log-probabilities precomputed in a pass over the data, halves parameter memory but ties the data to one pass order
and one tokenisation, needs a second pipeline stage and does not follow the data through shuffling, epochs and
resume; the copy costs one forward pass per step and one set of parameters. The loss only needs the reference's
parameters as a pytree: whichever parameters an optimizer trains (all, or adapters), the reference is the model
with `reference_params` in place of the trained ones, never differentiated (stop_gradient).

ORPO (dpo_algo='orpo', MaxText's dpo.algo) needs no reference. With a(y) the mean log-probability of y's response
tokens and odds(y) = exp(a) / (1 - exp(a)):

    loss = -a(chosen) - orpo_lambda * log sigmoid(log odds(chosen) - log odds(rejected))      (mean over pairs)

and its rewards are orpo_lambda * a(y), as TRL reports them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.training.state import REFERENCE  # noqa: F401  (the state key of the reference parameters)

REJECTED = "rejected_"  # batch keys of the rejected sequences (data/pair_pipeline.py)


def sequence_log_probs(logits_BTV: jax.Array, targets_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
  """[B]: the summed log-probability of each row's masked targets."""
  logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
  tok_BT = jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
  return jnp.sum(tok_BT * mask_BT.astype(jnp.float32), axis=-1)


def dpo_terms(pi_c, pi_r, ref_c, ref_r, beta: float, label_smoothing: float) -> tuple[jax.Array, dict]:
  """(per-pair loss [B], per-pair statistics [B]) from the four per-sequence log-probabilities."""
  reward_c, reward_r = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
  z = reward_c - reward_r
  loss = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)
  stats = {"rewards/chosen": reward_c, "rewards/rejected": reward_r, "rewards/margin": z,
           "rewards/accuracy": (reward_c > reward_r).astype(jnp.float32), "log_probs/chosen": pi_c,
           "log_probs/rejected": pi_r}
  return loss, stats


def both_sides(batch: dict) -> dict:
  """The chosen rows then the rejected rows, as one [2B, T] batch of the usual keys (one forward for both)."""
  return {k: jnp.concatenate([batch[k], batch[REJECTED + k]]) for k in batch if not k.startswith(REJECTED)}


def orpo_terms(pi_c, pi_r, n_c, n_r, lam: float) -> tuple[jax.Array, dict]:
  """(per-pair ORPO loss [B], statistics [B]) from summed response log-probabilities and response lengths."""
  a_c, a_r = pi_c / jnp.maximum(n_c, 1.0), pi_r / jnp.maximum(n_r, 1.0)
  log1m = lambda a: jnp.log1p(-jnp.exp(jnp.minimum(a, -1e-6)))  # log(1 - p), p < 1
  log_odds = (a_c - a_r) - (log1m(a_c) - log1m(a_r))
  loss = -a_c - lam * jax.nn.log_sigmoid(log_odds)
  reward_c, reward_r = lam * a_c, lam * a_r
  stats = {"rewards/chosen": reward_c, "rewards/rejected": reward_r, "rewards/margin": reward_c - reward_r,
           "rewards/accuracy": (reward_c > reward_r).astype(jnp.float32), "log_probs/chosen": pi_c,
           "log_probs/rejected": pi_r}
  return loss, stats


def dpo_loss_fn(params, ref_params, rest, graphdef, batch, forward, *, beta: float, label_smoothing: float,
                deterministic: bool, moe_out: dict | None = None, algo: str = "dpo", orpo_lambda: float = 0.1):
  """Like step.loss_fn: (mean loss, (pair-summed loss, pair count, new rest)); `moe_out` also receives "dpo", the
  pair-summed statistics. `forward(model, batch, deterministic)` -> (logits, moe aux, batch as the model saw it).
  `algo='orpo'` uses no reference (`ref_params` may be None)."""
  both = both_sides(batch)
  model = nnx.merge(graphdef, params, rest)
  logits, moe_aux, seen = forward(model, both, deterministic)
  mask = seen["targets_segmentation"] != 0
  pi = sequence_log_probs(logits, seen["targets"], mask)
  b = batch["inputs"].shape[0]
  if algo == "orpo":
    n = jnp.sum(mask, axis=-1).astype(jnp.float32)
    loss, stats = orpo_terms(pi[:b], pi[b:], n[:b], n[b:], orpo_lambda)
  else:
    ref_model = nnx.merge(graphdef, jax.lax.stop_gradient(ref_params), rest)
    ref_logits, _, _ = forward(ref_model, both, True)
    ref = jax.lax.stop_gradient(sequence_log_probs(ref_logits, seen["targets"], mask))
    loss, stats = dpo_terms(pi[:b], pi[b:], ref[:b], ref[b:], beta, label_smoothing)
  valid = (jnp.any(mask[:b], axis=-1) & jnp.any(mask[b:], axis=-1)).astype(jnp.float32)  # all-padding rows: no pair
  total, count = jnp.sum(loss * valid), jnp.sum(valid)
  if moe_aux["has_lb_loss"]:
    total = total + moe_aux["lb_loss"] * count
  if moe_out is not None:
    moe_out.update(moe_aux)
    moe_out["dpo"] = {k: jnp.sum(jax.lax.stop_gradient(v) * valid) for k, v in stats.items()}
  new_rest = nnx.state(model, nnx.Not(nnx.Param))
  return total / jnp.maximum(count, 1.0), (total, count, new_rest)


def dpo_metrics(sums: dict, count: jax.Array) -> dict:
  """Pair-summed statistics -> their means over the step's pairs."""
  return {k: v / jnp.maximum(count, 1.0) for k, v in sums.items()}
