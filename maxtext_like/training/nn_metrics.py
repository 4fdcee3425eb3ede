"""record_internal_nn_metrics: per-layer activation statistics and gradient / parameter norms at log steps.

A separate jitted probe on the logged step's batch (one more forward and backward per log step), so the train step
stays as it is. Activations: every decoder layer's input (the tensor tagged `decoder_layer_input`, which layer i
receives from layer i - 1), captured by evaluating the loss's jaxpr with scans unrolled, so it works for the scanned
and the looped layouts alike; the decoder's normed output is not tagged and so not reported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend import core

from maxtext_like.models.decoder import layer_stacks
from maxtext_like.training.step import loss_fn

TAG = "decoder_layer_input"
_CALLS = ("pjit", "jit", "closed_call", "core_call", "remat", "remat2", "checkpoint", "custom_jvp_call",
          "custom_vjp_call")


def _sub_jaxpr(eqn):
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    j = eqn.params.get(key)
    if j is not None:
      return (j.jaxpr, j.consts) if hasattr(j, "jaxpr") else (j, ())
  return None


def _tagged(jaxpr) -> bool:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "name" and eqn.params.get("name") == TAG:
      return True
    sub = _sub_jaxpr(eqn)
    if sub is not None and _tagged(sub[0]):
      return True
  return False


def _run(jaxpr, consts, args, hits: list) -> list:
  """Evaluates `jaxpr`, appending each tagged value to `hits` (scans over tagged bodies run one step at a time)."""
  env = {}
  read = lambda v: v.val if isinstance(v, core.Literal) else env[v]  # noqa: E731
  for v, x in zip(jaxpr.constvars, consts):
    env[v] = x
  for v, x in zip(jaxpr.invars, args):
    env[v] = x
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    name, sub = eqn.primitive.name, _sub_jaxpr(eqn)
    if name == "name" and eqn.params.get("name") == TAG:
      hits.append(ins[0])
      outs = [ins[0]]
    elif name == "scan" and _tagged(sub[0]):
      outs = _scan(eqn, sub, ins, hits)
    elif name in _CALLS and sub is not None and _tagged(sub[0]):
      outs = _run(sub[0], sub[1], ins[len(ins) - len(sub[0].invars):], hits)
    else:
      outs = eqn.primitive.bind(*ins, **eqn.params)
      outs = outs if eqn.primitive.multiple_results else [outs]
    for v, x in zip(eqn.outvars, outs):
      env[v] = x
  return [read(v) for v in jaxpr.outvars]


def _scan(eqn, sub, ins, hits):
  p = eqn.params
  nc, ncarry = p["num_consts"], p["num_carry"]
  consts, carry, xs = ins[:nc], ins[nc:nc + ncarry], ins[nc + ncarry:]
  ys = []
  order = range(p["length"] - 1, -1, -1) if p["reverse"] else range(p["length"])
  for i in order:
    outs = _run(sub[0], sub[1], [*consts, *carry, *[x[i] for x in xs]], hits)
    carry, y = outs[:ncarry], outs[ncarry:]
    ys.append(y)
  if p["reverse"]:
    ys.reverse()
  stacked = [jnp.stack(col) for col in zip(*ys)] if ys and ys[0] else [jnp.zeros((p["length"], *v.aval.shape), v.aval.dtype)
                                                                           for v in eqn.outvars[ncarry:]]
  return [*carry, *stacked]


def _layer_sq_norms(tree, spec) -> dict[int, jax.Array]:
  """Sum of squares per decoder layer of a params-shaped tree (stacked layers split along param_scan_axis)."""
  out: dict[int, jax.Array] = {}
  offsets, off = {}, 0
  for st in layer_stacks(spec):
    offsets[st.name] = (off, st.num_layers, st.cycle)
    off += st.num_layers
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
    if len(keys) < 3 or keys[0] != "decoder" or keys[1] not in offsets:
      continue
    start, n, cycle = offsets[keys[1]]
    x = jnp.asarray(leaf, jnp.float32)
    if isinstance(keys[2], int):  # looped layout: decoder.<stack>.<i>
      out[start + keys[2]] = out.get(start + keys[2], 0.0) + jnp.sum(x * x)
    elif spec.scan_layers and cycle == 1:
      per = jnp.sum(jnp.moveaxis(x * x, spec.param_scan_axis, 0).reshape(n, -1), axis=1)
      for i in range(n):
        out[start + i] = out.get(start + i, 0.0) + per[i]
  return out


def make_probe(graphdef, spec, z_loss: float, wrap=lambda f: f):
  """jitted (params, rest, batch) -> {metric name: value} for record_internal_nn_metrics; `wrap` puts the probe in
  the step's activation-sharding context."""

  def loss(params, rest, batch):
    return loss_fn(params, rest, graphdef, batch, z_loss, True)[0]

  def probe(params, rest, batch):
    flat, tree = jax.tree.flatten((params, rest, batch))
    closed = jax.make_jaxpr(lambda *a: loss(*jax.tree.unflatten(tree, a)))(*flat)
    hits: list = []
    _run(closed.jaxpr, closed.consts, flat, hits)
    out = {}
    for i, a in enumerate(hits):
      a = a.astype(jnp.float32)
      out[f"nn/layer_{i}/activation_mean"] = jnp.mean(a)
      out[f"nn/layer_{i}/activation_stdev"] = jnp.std(a)
      out[f"nn/layer_{i}/activation_fraction_zero"] = jnp.mean(a == 0)
    grads = jax.grad(loss)(params, rest, batch)
    for i, sq in sorted(_layer_sq_norms(grads, spec).items()):
      out[f"nn/layer_{i}/grad_norm"] = jnp.sqrt(sq)
    for i, sq in sorted(_layer_sq_norms(params, spec).items()):
      out[f"nn/layer_{i}/param_norm"] = jnp.sqrt(sq)
    return out

  return jax.jit(wrap(probe))


def record(probe, state, batch) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(probe(state["params"], state["rest"], batch)).items()}

