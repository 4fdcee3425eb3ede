"""Feed-forward block: act0(x W0) * act1(x W1) (gated) or act(x Wi), then Wo."""

from __future__ import annotations

import jax
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from maxtext_like.models.linears import DenseGeneral, activation, apply_together
from maxtext_like.models.sharding import ACT_BTD, ACT_BTF, constrain
from maxtext_like.models.layer_specs import MlpSpec


class MlpBlock(nnx.Module):
  """Kernels wi_0, wi_1 (or wi) [D,F] and wo [F,D]."""

  def __init__(self, spec: MlpSpec, *, rngs: nnx.Rngs):
    D, F = spec.emb_dim, spec.mlp_dim
    dense = dict(dtype=spec.dtype, weight_dtype=spec.weight_dtype, precision=spec.matmul_precision,
                 init_scale=spec.dense_init_scale, rngs=rngs)
    self.activations = spec.mlp_activations
    if len(self.activations) == 2:
      self.wi_0 = DenseGeneral((D,), (F,), ("embed", "mlp"), **dense)
      self.wi_1 = DenseGeneral((D,), (F,), ("embed", "mlp"), **dense)
    else:
      self.wi = DenseGeneral((D,), (F,), ("embed", "mlp"), **dense)
    self.wo = DenseGeneral((F,), (D,), ("mlp", "embed"), **dense)
    self.dropout = nnx.Dropout(spec.dropout_rate)

  def __call__(self, x_BTD: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
    """Dropout on the hidden layer iff dropout_key is given."""
    if len(self.activations) == 2:
      h0_BTF, h1_BTF = apply_together((self.wi_0, self.wi_1), x_BTD)
      h0_BTF, h1_BTF = checkpoint_name(h0_BTF, "mlpwi_0"), checkpoint_name(h1_BTF, "mlpwi_1")
      h_BTF = activation(self.activations[0])(h0_BTF) * activation(self.activations[1])(h1_BTF)
    else:
      h_BTF = activation(self.activations[0])(checkpoint_name(self.wi(x_BTD), "mlpwi"))
    h_BTF = constrain(h_BTF, ACT_BTF)
    h_BTF = self.dropout(h_BTF, deterministic=dropout_key is None, rngs=dropout_key)
    return constrain(checkpoint_name(self.wo(h_BTF), "mlpwo"), ACT_BTD)
