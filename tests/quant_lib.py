"""Shared by the quantization tests: counting the matmuls that really run on integers."""

import jax
import jax.numpy as jnp


def integer_dots(fn, *args) -> int:
  """Integer-operand dot_generals in fn's jaxpr (inside scans, remat and custom_vjp too)."""
  def count(jaxpr) -> int:
    n = 0
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general" and all(jnp.issubdtype(v.aval.dtype, jnp.integer) for v in eqn.invars):
        n += 1
      for p in eqn.params.values():
        for sub in (p if isinstance(p, (list, tuple)) else [p]):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            n += count(inner)
    return n
  return count(jax.make_jaxpr(fn)(*args).jaxpr)
