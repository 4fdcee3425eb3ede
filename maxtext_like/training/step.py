"""The pure train step: loss, gradients (with accumulation), optimizer update and metrics.

State is a plain dict pytree: {"step", "params", "opt_state", "rest", "loss_window"}; `rest` holds the model's
non-parameter state (dropout RNG counters), `loss_window` the recent losses that `skip_step_on_spikes` compares with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from maxtext_like.models import load_balance
from maxtext_like.models import moe as moe_lib
from maxtext_like.models.sharding import ACT_BT, constrain
from maxtext_like.training import dpo


@dataclasses.dataclass(frozen=True)
class StepOptions:
  grad_accum: int = 1
  z_loss_multiplier: float = 0.0
  skip_step_on_spikes: bool = False
  skip_step_scaling_factor: float = 6.0
  deterministic: bool = True
  rows_to_train_on: int = 0  # > 0: train on the first rows of the batch only (expansion_factor_real_data)
  use_dpo: bool = False  # the loss of (chosen, rejected) pairs against state["reference_params"] (training/dpo.py)
  dpo_beta: float = 0.1
  dpo_label_smoothing: float = 0.0
  dpo_algo: str = "dpo"  # or "orpo": no reference
  orpo_lambda: float = 0.1


def cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array, mask_BT: jax.Array, z_loss: float) -> tuple[jax.Array, jax.Array]:
  """(sum of per-token loss over unmasked tokens, number of those tokens); z-loss added per token."""
  logits_BTV = logits_BTV.astype(jnp.float32)
  lse_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
  target_logit_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
  per_token = lse_BT - target_logit_BT + z_loss * jnp.square(lse_BT)
  mask = mask_BT.astype(jnp.float32)
  return jnp.sum(per_token * mask), jnp.sum(mask)


def forward(model, batch, deterministic: bool):
  """(logits, MoE aux, the batch as the model saw it): the model on a batch of the LM keys."""
  # Load-balanced context parallelism: the model expects the sequence reordered (models/load_balance.py); the
  # token-summed loss does not depend on the order.
  batch = load_balance.reorder_batch(batch, model.spec.context_load_balance_shards, model.spec.context_reorder_strategy)
  # In the activations' layout (the loaded batch is split by rows only): targets then meet the logits where they
  # are, instead of an all-to-all of the [B, T, V] logits when the sequence is split.
  batch = {k: constrain(v, ACT_BT) for k, v in batch.items()}
  logits, moe_aux = model(batch["inputs"], batch["inputs_position"], batch["inputs_segmentation"],
                          deterministic=deterministic, return_aux=True)
  return logits, moe_aux, batch


def loss_fn(params, rest, graphdef, batch, z_loss: float, deterministic: bool, moe_out: dict | None = None):
  """(mean loss, (token-summed loss, token count, new rest)). MoE models add their load-balance loss per token
  (models/moe.py); pass a dict as `moe_out` to receive {'lb_loss', 'bias_delta', 'has_lb_loss'}. Only targets whose
  targets_segmentation is not 0 count (padding, and the untrained tokens of SFT records)."""
  model = nnx.merge(graphdef, params, rest)
  logits, moe_aux, batch = forward(model, batch, deterministic)
  total, count = cross_entropy(logits, batch["targets"], batch["targets_segmentation"] != 0, z_loss)
  if moe_aux["has_lb_loss"]:
    total = total + moe_aux["lb_loss"] * count
  if moe_out is not None:
    moe_out.update(moe_aux)
  return total / jnp.maximum(count, 1.0), (total, count, untrained_state(model, params))


def untrained_state(model, params):
  """What the step carries in `rest` (not differentiated): the model state that is not parameters, and with LoRA,
  where `params` holds only the adapters, the frozen base parameters too (training/lora_train.py)."""
  adapters_only = any(isinstance(v, nnx.LoRAParam) for _, v in nnx.to_flat_state(params))
  return nnx.state(model, nnx.Not(nnx.LoRAParam if adapters_only else nnx.Param))


def make_train_step(graphdef, optimizer: optax.GradientTransformation, schedule: Callable, opts: StepOptions,
                    compute_shardings: dict | None = None):
  """train_step(state, batch) -> (state, metrics). Pure: jit it with shardings and donate the state.

  With host offload, `compute_shardings` holds the device-memory shardings that params / optimizer state are
  loaded into for the step; the jit's out_shardings put them back in host memory.
  """

  def grads_of(params, rest, batch, ref):
    """(summed loss, count, summed grads, rest, moe) with moe = {'lb_loss' (summed over micro-batches),
    'bias_delta' (averaged), 'has_lb_loss'} (and 'dpo', pair-summed statistics). `ref`: DPO's reference params."""
    if opts.grad_accum == 1:
      (_, (total, count, rest, moe)), grads = jax.value_and_grad(
          lambda p: _sum_loss(p, rest, batch, ref), has_aux=True)(params)
      return total, count, grads, rest, moe
    micro = jax.tree.map(lambda x: x.reshape(opts.grad_accum, x.shape[0] // opts.grad_accum, *x.shape[1:]), batch)
    static = {}

    def body(carry, mb):
      total, count, grads, rest, moe = carry
      (_, (t, c, rest, m)), g = jax.value_and_grad(lambda p: _sum_loss(p, rest, mb, ref), has_aux=True)(params)
      static["has_lb_loss"] = m.pop("has_lb_loss")
      return (total + t, count + c, jax.tree.map(jnp.add, grads, g), rest, jax.tree.map(jnp.add, moe, m)), None

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    moe0 = jax.eval_shape(lambda: _sum_loss(params, rest, jax.tree.map(lambda x: x[0], micro), ref)[1][3])
    moe0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), {k: v for k, v in moe0.items() if k != "has_lb_loss"})
    (total, count, grads, rest, moe), _ = jax.lax.scan(body, (jnp.float32(0), jnp.float32(0), zeros, rest, moe0), micro)
    moe["bias_delta"] = jax.tree.map(lambda d: d / opts.grad_accum, moe["bias_delta"])
    moe["router_load"] = jax.tree.map(lambda d: d / opts.grad_accum, moe["router_load"])
    return total, count, grads, rest, {**moe, **static}

  def _sum_loss(params, rest, batch, ref):
    # Gradients of the token-summed (DPO: pair-summed) loss; normalised by the count after accumulation.
    moe = {}
    if opts.use_dpo:
      mean, (total, count, new_rest) = dpo.dpo_loss_fn(
          params, ref, rest, graphdef, batch, forward, beta=opts.dpo_beta, label_smoothing=opts.dpo_label_smoothing,
          deterministic=opts.deterministic, moe_out=moe, algo=opts.dpo_algo, orpo_lambda=opts.orpo_lambda)
      return total, (total, count, new_rest, moe)
    mean, (total, count, new_rest) = loss_fn(params, rest, graphdef, batch, opts.z_loss_multiplier, opts.deterministic,
                                             moe_out=moe)
    return total, (total, count, new_rest, moe)

  def train_step(state: dict[str, Any], batch: dict[str, jax.Array]):
    if compute_shardings is not None:
      state = {**state, "params": jax.device_put(state["params"], compute_shardings["params"]),
               "opt_state": jax.device_put(state["opt_state"], compute_shardings["opt_state"])}
    params = state["params"]
    if opts.rows_to_train_on:  # the loaded batch has placeholder rows after these (expansion_factor_real_data)
      batch = jax.tree.map(lambda x: x[:opts.rows_to_train_on], batch)
    total, count, grads, rest, moe = grads_of(params, state["rest"], batch, state.get(dpo.REFERENCE))
    denom = jnp.maximum(count, 1.0)
    loss = total / denom
    grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, params)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    new_params = moe_lib.apply_bias_updates(optax.apply_updates(params, updates), moe["bias_delta"])
    window = state["loss_window"]
    seen = jnp.sum(window > 0)
    spike = jnp.logical_and(seen == window.shape[0], loss > opts.skip_step_scaling_factor * jnp.mean(window))
    skip = jnp.logical_and(opts.skip_step_on_spikes, spike) | ~jnp.isfinite(loss) & opts.skip_step_on_spikes
    if opts.skip_step_on_spikes:
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(skip, o, n), new, old)
    else:
      keep = lambda new, old: new
    new_state = {
        "step": state["step"] + 1,
        "params": keep(new_params, params),
        "opt_state": keep(opt_state, state["opt_state"]),
        "rest": rest,
        "loss_window": jnp.where(skip, window, jnp.roll(window, 1).at[0].set(loss)),
    }
    if dpo.REFERENCE in state:
      new_state[dpo.REFERENCE] = state[dpo.REFERENCE]
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state["step"]), "tokens": count,
               "skipped": skip.astype(jnp.int32), "param_norm": optax.tree.norm(params)}
    if "dpo" in moe:  # rewards/chosen, rewards/rejected, rewards/margin, rewards/accuracy, log_probs/*: means over pairs
      metrics.update(dpo.dpo_metrics(moe["dpo"], count))
    if moe["has_lb_loss"]:  # MoE: load-balance loss (included in "loss"), mean over micro-batches
      metrics["moe_lb_loss"] = moe["lb_loss"] / opts.grad_accum
    if moe["router_load"]:  # router statistics: the busiest expert's share of its layer's tokens, x E (1 = uniform)
      metrics["moe_max_expert_load"] = jnp.max(jnp.stack([jnp.max(a) * a.shape[-1] for a in moe["router_load"].values()]))
    return new_state, metrics

  return train_step


def make_eval_step(graphdef, z_loss: float, opts: StepOptions = StepOptions()):
  def eval_step(state, batch):
    moe = {}
    if opts.use_dpo:  # the DPO loss of the eval pairs
      _, (total, count, _) = dpo.dpo_loss_fn(state["params"], state.get(dpo.REFERENCE), state["rest"], graphdef, batch,
                                             forward, beta=opts.dpo_beta, label_smoothing=opts.dpo_label_smoothing,
                                             deterministic=True, moe_out=moe, algo=opts.dpo_algo,
                                             orpo_lambda=opts.orpo_lambda)
    else:
      _, (total, count, _) = loss_fn(state["params"], state["rest"], graphdef, batch, z_loss, True, moe_out=moe)
    if moe["has_lb_loss"]:  # eval loss is cross entropy only (as MaxText's); the MoE load-balance term is training's
      total = total - moe["lb_loss"] * count
    return {"total": total, "count": count}
  return eval_step
