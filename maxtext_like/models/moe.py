"""Mixture-of-experts feed-forward layer (`MoeBlock`), its routing, dispatch modes and auxiliary outputs.

Reusable by any family: a decoder block builds `MoeBlock(spec.mlp_spec, spec.moe, rngs=rngs)` where it would build
an `MlpBlock(spec.mlp_spec)` (`spec.moe` is a `MoeSpec`; its fields are MaxText's config keys of the same names), its
Family declares
`moe=True, spec_fields=("moe",)`, and `is_moe_layer(spec, i)` tells which layers stay dense
(`moe_block.moe_decoder_layer` is the ready-made llama-style block).

Shape letters (besides the package's B, T, D, F): E experts, A experts per token (num_experts_per_tok),
C expert capacity (tokens per expert and sequence), M tokens flattened (B * T), R = M * A routed token copies.

Parameters (logical axes in brackets):
  gate.kernel [D, E]        ('embed', None)       router
  gate.bias   [E]           (None,)               only with routed_bias (selection bias, aux-loss-free balancing)
  wi_0, wi_1  [E, D, F]     ('exp', 'embed_no_exp', 'mlp')   gated experts (wi [E, D, F] with one activation)
  wo          [E, F, D]     ('exp', 'mlp', 'embed_no_exp')
  shared_experts.*          an MlpBlock of hidden size shared_experts * F (DeepSeek), only if shared_experts > 0
  wi_0_bias, wi_1_bias [E, F], wo_bias [E, D]  ('exp', ...)  expert biases, only with mlp_bias (gpt-oss)
gpt-oss (constructor arguments of its block, models/families/gpt_oss.py): `topk_softmax_router` makes gate.bias a plain router bias
(logits = x W + b, weights = softmax over the top-k logits) and `glu_alpha` the clamped GLU
min(h0, L) * sigmoid(alpha * min(h0, L)) * (clip(h1, -L, L) + 1), L = mlp_activations_limit.
Llama 4 (constructor arguments of its block, models/families/llama4.py): `sigmoid_topk_router` chooses the top-k
*logits* and weights them by their sigmoid (no renormalisation), and `weights_on_inputs` multiplies each routed
token copy by its weight *before* the expert (y = sum_a expert_a(w_a x)) instead of the expert's output.
'exp' maps to the mesh axis 'expert' (logical_axis_rules), so ici/dcn_expert_parallelism shard the experts;
'embed_no_exp' is 'embed' without 'expert' (the rule table resolves 'embed' first, which would take 'expert').

Routing (`MoeBlock.route`): scores = softmax(logits) ('' / 'softmax') or sigmoid(logits) ('sigmoid');
experts are chosen by top-A of scores (+ gate.bias when routed_bias; with n_routing_groups > 0 only experts of
the topk_routing_group best groups, a group scored by the sum of its top-2 scores, are eligible); the weights
are the chosen *unbiased* scores, divided by their sum if norm_topk_prob, times routed_scaling_factor.
use_random_routing replaces the logits by input-independent uniform noise (fixed key; debugging/benchmarks).

Dispatch: `sparse_matmul=true` (default) is dropless: the R token copies are sorted by expert and run through a
grouped matmul (`jax.lax.ragged_dot`; on CPU, where ragged_dot costs as much as every expert on every row, a
blocked grouped matmul in plain JAX, `MoeBlock._blocked_ffn`; `MoeBlock.gmm_impl` says which). `megablox=true` asks for the Pallas TPU kernel, which is not built: the
same ragged_dot is used and a notice is logged once. `sparse_matmul=false` is GShard-style capacity dispatch with
einsums, per sequence: each expert takes C = ceil(T * A / E * capacity_factor) tokens (first choices first, then
by position) and drops the rest (their weight is lost; the residual stream carries the token); capacity_factor
<= 0 means C = T (nothing dropped). `dense_reference(block, x)` runs every expert on every token (tests).

Auxiliary outputs, sown as `nnx.Intermediate` and collected by the decoder (`pop_layer_aux`):
  lb_loss      load_balance_loss_weight * E * sum_e f_e * P_e (f_e: fraction of routed copies sent to e,
               P_e: mean router probability of e), added to the training loss by training/step.py.
  bias_delta   routed_bias_update_rate * sign(mean load - load_e): the step adds it to gate.bias after the
               optimizer update (DeepSeek-V3 aux-loss-free balancing; the bias gets no gradient).
  router_load  the fraction of this layer's routed token copies each expert received [E] (router statistics;
               uniform routing is 1/E each). The train step logs the largest as `moe_max_expert_load` (x E).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from maxtext_like.models.linears import activation, kernel_init, matmul_precision, param
from maxtext_like.models.mlp import MlpBlock
from maxtext_like.models.sharding import ACT_BTD, constrain
from maxtext_like.models.layer_specs import MlpSpec
from maxtext_like.models.spec import ModelSpec

log = logging.getLogger(__name__)

# Logical names of dispatched activations: batch (not on 'expert'), experts, capacity, embed / mlp.
ACT_BECD = ("activation_batch_no_exp", "activation_exp", None, "activation_embed")
ACT_BECF = ("activation_batch_no_exp", "activation_exp", None, "activation_mlp")


@dataclasses.dataclass(frozen=True)
class MoeSpec:
  """MaxText's MoE keys (same names and meaning; see configs/base.yml). `mlp_dim` is the expert hidden size F
  (the derived moe_mlp_dim)."""

  num_experts: int = 4
  num_experts_per_tok: int = 2
  mlp_dim: int = 128
  capacity_factor: float = -1.0
  sparse_matmul: bool = True
  megablox: bool = False
  load_balance_loss_weight: float = 0.0
  use_random_routing: bool = False
  norm_topk_prob: bool = False
  routed_score_func: str = ""
  routed_scaling_factor: float = 1.0
  routed_bias: bool = False
  routed_bias_update_rate: float = 0.0
  n_routing_groups: int = -1
  topk_routing_group: int = -1
  shared_experts: int = 0
  first_num_dense_layers: int = 0
  interleave_moe_layer_step: int = 1
  float32_weight_sum: bool = True
  float32_gate_logits: bool = False
  mlp_bias: bool = False  # expert biases wi_0_bias / wi_1_bias (or wi_bias) [E, F] and wo_bias [E, D] (gpt-oss)
  routing_group_score: str = "top2_sum"  # how a routing group is scored: 'top2_sum' (DeepSeek-V3) or 'max' (V2)

  def __post_init__(self):
    problems = list(_problems(self))
    if problems:
      raise ValueError("Invalid MoeSpec: " + "; ".join(problems))

  def replace(self, **changes) -> "MoeSpec":
    return dataclasses.replace(self, **changes)


def _problems(m: MoeSpec):
  E, A = m.num_experts, m.num_experts_per_tok
  if not 1 <= A <= E:
    yield f"need 1 <= num_experts_per_tok={A} <= num_experts={E}"
  if m.mlp_dim <= 0:
    yield f"mlp_dim={m.mlp_dim} must be > 0"
  if m.routed_score_func not in ("", "softmax", "sigmoid"):
    yield f"routed_score_func={m.routed_score_func!r} not in ['', 'softmax', 'sigmoid']"
  if m.n_routing_groups > 0:
    if E % m.n_routing_groups:
      yield f"num_experts={E} must be a multiple of n_routing_groups={m.n_routing_groups}"
    elif not 0 < m.topk_routing_group <= m.n_routing_groups or m.topk_routing_group * (E // m.n_routing_groups) < A:
      yield (f"topk_routing_group={m.topk_routing_group} must be in [1, n_routing_groups={m.n_routing_groups}] "
             f"and its groups must hold >= num_experts_per_tok={A} experts")
  if m.interleave_moe_layer_step < 1 or m.first_num_dense_layers < 0 or m.shared_experts < 0:
    yield "interleave_moe_layer_step must be >= 1; first_num_dense_layers, shared_experts >= 0"
  if m.routed_bias_update_rate and not m.routed_bias:
    yield "routed_bias_update_rate needs routed_bias=true"


def is_moe_layer(spec: ModelSpec, layer_index: int) -> bool:
  """Layer i is MoE iff i >= first_num_dense_layers and (i + 1) % interleave_moe_layer_step == 0
  (MaxText/llama4 and HF decoder_sparse_step semantics)."""
  m = spec.moe
  return layer_index >= m.first_num_dense_layers and (layer_index + 1) % m.interleave_moe_layer_step == 0


_MEGABLOX_NOTICE = []
GMM_IMPL: str | None = None  # force 'ragged_dot' or 'blocked' for MoeBlocks built from now on (benchmarks); None: auto


def _megablox_notice():
  if not _MEGABLOX_NOTICE:
    _MEGABLOX_NOTICE.append(True)
    log.warning("megablox=true: the Pallas megablox kernel is not built in maxtext_like; the grouped matmul uses "
                "jax.lax.ragged_dot (XLA's grouped matmul) on %s instead", jax.default_backend())


class Gate(nnx.Module):
  """Router: logits_ME = x_MD @ kernel_DE (+ nothing: the optional bias only shifts expert *selection*)."""

  def __init__(self, spec: MlpSpec, m: MoeSpec, *, rngs: nnx.Rngs):
    self.dtype = jnp.float32 if m.float32_gate_logits else spec.dtype
    self.kernel = param(rngs, kernel_init(spec.dense_init_scale, 0, 1), (spec.emb_dim, m.num_experts),
                        spec.weight_dtype, ("embed", None))
    self.precision = spec.matmul_precision
    if m.routed_bias:
      self.bias = param(rngs, nnx.initializers.zeros, (m.num_experts,), spec.weight_dtype, (None,))

  def __call__(self, x_MD: jax.Array) -> jax.Array:
    return jnp.dot(x_MD.astype(self.dtype), self.kernel[...].astype(self.dtype),
                   precision=matmul_precision(self.precision))


def _expert_kernel(rngs, shape, dtype, axes, scale):
  init = nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal", in_axis=1, out_axis=2, batch_axis=(0,))
  return param(rngs, init, shape, dtype, axes)


class MoeBlock(nnx.Module):
  """Routed experts (+ shared experts); `__call__(x_BTD, dropout_key=None) -> y_BTD`. See the module docstring."""

  def __init__(self, spec: MlpSpec, m: MoeSpec | None, *, rngs: nnx.Rngs, topk_softmax_router: bool = False,
               glu_alpha: float | None = None, sigmoid_topk_router: bool = False, weights_on_inputs: bool = False):
    """topk_softmax_router (gpt-oss): logits = x W + gate.bias, weights = softmax over the top-k logits.
    glu_alpha (gpt-oss experts): min(h0, L) * sigmoid(alpha min(h0, L)) * (clip(h1, -L, L) + 1) with
    L = mlp_activations_limit (> 0; no clamp otherwise).
    sigmoid_topk_router (Llama 4): experts = top-k logits, weights = sigmoid of those logits.
    weights_on_inputs (Llama 4): each expert gets its token scaled by the routing weight; outputs are summed."""
    if m is None:
      raise ValueError("a MoeBlock needs a MoeSpec (spec.moe is None: the family builds MoE layers without the MoE keys)")
    E, D, F = m.num_experts, spec.emb_dim, m.mlp_dim
    self.m, self.dtype, self.precision = m, spec.dtype, spec.matmul_precision
    self.activations = spec.mlp_activations
    self.gate = Gate(spec, m, rngs=rngs)
    k = dict(dtype=spec.weight_dtype, scale=spec.dense_init_scale)
    if len(self.activations) == 2:
      self.wi_0 = _expert_kernel(rngs, (E, D, F), axes=("exp", "embed_no_exp", "mlp"), **k)
      self.wi_1 = _expert_kernel(rngs, (E, D, F), axes=("exp", "embed_no_exp", "mlp"), **k)
    else:
      self.wi = _expert_kernel(rngs, (E, D, F), axes=("exp", "embed_no_exp", "mlp"), **k)
    self.wo = _expert_kernel(rngs, (E, F, D), axes=("exp", "mlp", "embed_no_exp"), **k)
    if m.mlp_bias:  # gpt-oss: a bias per expert after each expert matmul
      for name in (("wi_0", "wi_1") if len(self.activations) == 2 else ("wi",)):
        setattr(self, f"{name}_bias", param(rngs, nnx.initializers.zeros, (E, F), spec.weight_dtype, ("exp", "mlp")))
      self.wo_bias = param(rngs, nnx.initializers.zeros, (E, D), spec.weight_dtype, ("exp", "embed_no_exp"))
    self.topk_softmax_router, self.glu_alpha = topk_softmax_router, glu_alpha
    self.sigmoid_topk_router, self.weights_on_inputs = sigmoid_topk_router, weights_on_inputs
    self.activations_limit = spec.mlp_activations_limit
    if m.shared_experts > 0:
      self.shared_experts = MlpBlock(spec.replace(mlp_dim=m.shared_experts * F), rngs=rngs)
    if m.megablox and m.sparse_matmul:
      _megablox_notice()
    # Grouped matmul of the dropless path: 'ragged_dot' (XLA's grouped matmul; TPU/GPU) or 'blocked' (CPU, where
    # ragged_dot runs every expert on every row). A plain attribute, so tests can pick either.
    self.gmm_impl = GMM_IMPL or ("blocked" if jax.default_backend() == "cpu" else "ragged_dot")

  # ---- routing --------------------------------------------------------------------------------------------

  def route(self, x_BTD: jax.Array):
    """(probs_BTE f32 router scores, experts_BTA int32, weights_BTA f32)."""
    m = self.m
    logits_BTE = self.gate(x_BTD).astype(jnp.float32)
    if m.use_random_routing:
      logits_BTE = jax.random.uniform(jax.random.key(0), logits_BTE.shape, jnp.float32)
    if self.topk_softmax_router:
      if m.routed_bias:
        logits_BTE = logits_BTE + self.gate.bias[...].astype(jnp.float32)
      top_BTA, experts_BTA = jax.lax.top_k(logits_BTE, m.num_experts_per_tok)
      return jax.nn.softmax(logits_BTE, -1), experts_BTA, jax.nn.softmax(top_BTA, -1) * m.routed_scaling_factor
    if self.sigmoid_topk_router:  # top-k of the logits themselves: no ties where the sigmoid saturates
      top_BTA, experts_BTA = jax.lax.top_k(logits_BTE, m.num_experts_per_tok)
      return jax.nn.sigmoid(logits_BTE), experts_BTA, jax.nn.sigmoid(top_BTA) * m.routed_scaling_factor
    probs_BTE = jax.nn.sigmoid(logits_BTE) if m.routed_score_func == "sigmoid" else jax.nn.softmax(logits_BTE, -1)
    select_BTE = probs_BTE
    if m.routed_bias:
      select_BTE = select_BTE + jax.lax.stop_gradient(self.gate.bias[...].astype(jnp.float32))
    if m.n_routing_groups > 0:
      select_BTE = _limit_to_top_groups(select_BTE, m.n_routing_groups, m.topk_routing_group, m.routing_group_score)
    _, experts_BTA = jax.lax.top_k(select_BTE, m.num_experts_per_tok)
    weights_BTA = jnp.take_along_axis(probs_BTE, experts_BTA, axis=-1)
    if m.norm_topk_prob:
      weights_BTA = weights_BTA / jnp.sum(weights_BTA, -1, keepdims=True)
    return probs_BTE, experts_BTA, weights_BTA * m.routed_scaling_factor

  # ---- experts ----------------------------------------------------------------------------------------------

  def _w(self, name):
    return getattr(self, name)[...].astype(self.dtype)

  def _add_bias(self, y, name, experts):
    """y + the expert bias of kernel `name` for expert ids `experts` (shaped to broadcast with y); y without
    mlp_bias."""
    if not self.m.mlp_bias:
      return y
    return y + jnp.take(getattr(self, f"{name}_bias")[...].astype(self.dtype), experts, axis=0)

  def _hidden(self, h0, h1=None):
    if self.glu_alpha is not None and len(self.activations) == 2:  # gpt-oss clamped GLU
      if self.activations_limit > 0:
        h0 = jnp.minimum(h0, self.activations_limit)
        h1 = jnp.clip(h1, -self.activations_limit, self.activations_limit)
      return h0 * jax.nn.sigmoid(h0 * self.glu_alpha) * (h1 + 1)
    if len(self.activations) == 2:
      return activation(self.activations[0])(h0) * activation(self.activations[1])(h1)
    return activation(self.activations[0])(h0)

  def _ragged_ffn(self, x_RD: jax.Array, group_sizes_E: jax.Array) -> jax.Array:
    """The experts on rows sorted by expert (group_sizes_E rows each): jax.lax.ragged_dot, or on CPU, where
    ragged_dot costs as much as running every expert on every row, a blocked grouped matmul (`_blocked_ffn`)."""
    if self.gmm_impl == "blocked":
      return self._blocked_ffn(x_RD, group_sizes_E)
    prec = matmul_precision(self.precision)
    e_R = jnp.repeat(jnp.arange(self.m.num_experts), group_sizes_E, total_repeat_length=x_RD.shape[0]) \
        if self.m.mlp_bias else None
    mm = lambda x, w: self._add_bias(jax.lax.ragged_dot(x, self._w(w), group_sizes_E, precision=prec), w, e_R)
    if len(self.activations) == 2:
      h_RF = self._hidden(checkpoint_name(mm(x_RD, "wi_0"), "moe_mlpwi_0"),
                          checkpoint_name(mm(x_RD, "wi_1"), "moe_mlpwi_1"))
    else:
      h_RF = self._hidden(mm(x_RD, "wi"))
    return checkpoint_name(mm(h_RF, "wo"), "moe_mlpwo")

  def _blocked_ffn(self, x_RD: jax.Array, group_sizes_E: jax.Array) -> jax.Array:
    """Grouped matmul in blocks of K rows (megablox's scheme in plain JAX): each expert's rows are padded to a
    multiple of K, and block n is multiplied by the kernel of its expert (gathered: [N, D, F]). N = ceil(R / K) + E
    is static; padding rows are zero and dropped. Costs about (1 + E * K / R) x the ideal FLOPs."""
    R, E = x_RD.shape[0], self.m.num_experts
    K = int(max(8, min(128, 2 ** math.ceil(math.log2(max(1, R // E))))))
    N = -(-R // K) + E
    padded_E = (group_sizes_E + K - 1) // K * K
    start_E = jnp.cumsum(group_sizes_E) - group_sizes_E
    pstart_E = jnp.cumsum(padded_E) - padded_E
    rows_R = jnp.arange(R)
    group_R = jnp.searchsorted(jnp.cumsum(group_sizes_E), rows_R, side="right")
    dest_R = pstart_E[group_R] + rows_R - start_E[group_R]
    group_N = jnp.clip(jnp.searchsorted(jnp.cumsum(padded_E), jnp.arange(N) * K, side="right"), 0, E - 1)
    x_NKD = jnp.zeros((N * K, x_RD.shape[1]), x_RD.dtype).at[dest_R].set(x_RD).reshape(N, K, -1)
    prec = matmul_precision(self.precision)
    mm = lambda x, w: self._add_bias(jnp.einsum("nkd,ndf->nkf", x, jnp.take(self._w(w), group_N, axis=0),
                                                precision=prec), w, group_N[:, None])
    if len(self.activations) == 2:
      h_NKF = self._hidden(checkpoint_name(mm(x_NKD, "wi_0"), "moe_mlpwi_0"),
                           checkpoint_name(mm(x_NKD, "wi_1"), "moe_mlpwi_1"))
    else:
      h_NKF = self._hidden(mm(x_NKD, "wi"))
    y_NKD = checkpoint_name(mm(h_NKF, "wo"), "moe_mlpwo")
    return jnp.take(y_NKD.reshape(N * K, -1), dest_R, axis=0)

  def _dense_ffn(self, x_BECD: jax.Array) -> jax.Array:
    """Every expert e on its own rows x_BECD[:, e]."""
    prec = matmul_precision(self.precision)
    e_E1 = jnp.arange(self.m.num_experts)[:, None]
    mm = lambda x, w: self._add_bias(jnp.einsum("becd,edf->becf", x, self._w(w), precision=prec), w, e_E1)
    if len(self.activations) == 2:
      h_BECF = self._hidden(mm(x_BECD, "wi_0"), mm(x_BECD, "wi_1"))
    else:
      h_BECF = self._hidden(mm(x_BECD, "wi"))
    h_BECF = constrain(h_BECF, ACT_BECF)
    return self._add_bias(jnp.einsum("becf,efd->becd", h_BECF, self._w("wo"), precision=prec), "wo", e_E1)

  # ---- dispatch ---------------------------------------------------------------------------------------------

  def _dropless(self, x_BTD, experts_BTA, weights_BTA):
    B, T, D = x_BTD.shape
    A, E = self.m.num_experts_per_tok, self.m.num_experts
    x_MD = x_BTD.reshape(B * T, D).astype(self.dtype)
    experts_R = experts_BTA.reshape(-1)
    order_R = jnp.argsort(experts_R, stable=True)
    x_RD = jnp.take(x_MD, order_R // A, axis=0)
    weights_MA = weights_BTA.reshape(B * T, A)
    if self.weights_on_inputs:  # each copy scaled by its weight before the expert; outputs summed with weight 1
      x_RD = x_RD * jnp.take(weights_MA.reshape(-1), order_R)[:, None].astype(x_RD.dtype)
      weights_MA = jnp.ones_like(weights_MA)
    group_sizes_E = jnp.bincount(experts_R, length=E).astype(jnp.int32)
    y_RD = self._ragged_ffn(x_RD, group_sizes_E)
    y_MAD = jnp.zeros_like(y_RD).at[order_R].set(y_RD).reshape(B * T, A, D)
    return self._combine("mad,ma->md", y_MAD, weights_MA).reshape(B, T, D)

  def capacity(self, T: int) -> int:
    m = self.m
    if m.capacity_factor <= 0:
      return T
    return max(1, min(T, math.ceil(T * m.num_experts_per_tok / m.num_experts * m.capacity_factor)))

  def _with_capacity(self, x_BTD, experts_BTA, weights_BTA):
    B, T, D = x_BTD.shape
    A, E, C = self.m.num_experts_per_tok, self.m.num_experts, self.capacity(T)
    onehot_BTAE = jax.nn.one_hot(experts_BTA, E, dtype=jnp.int32)
    # Priority: every token's first choice, then second choices, ... each in sequence order.
    onehot_BRE = jnp.swapaxes(onehot_BTAE, 1, 2).reshape(B, A * T, E)
    pos_BRE = jnp.cumsum(onehot_BRE, axis=1) - 1
    pos_BTA = jnp.swapaxes(jnp.sum(pos_BRE * onehot_BRE, -1).reshape(B, A, T), 1, 2)
    kept_BTA = pos_BTA < C
    slot_BTAC = jax.nn.one_hot(jnp.where(kept_BTA, pos_BTA, C), C, dtype=jnp.float32)  # dropped: all-zero row
    dispatch_BTAEC = onehot_BTAE.astype(jnp.float32)[..., None] * slot_BTAC[..., None, :]
    dispatch_BTEC = jnp.sum(dispatch_BTAEC, axis=2)
    combine_BTEC = jnp.einsum("btaec,bta->btec", dispatch_BTAEC, weights_BTA.astype(jnp.float32))
    if self.weights_on_inputs:  # tokens enter their experts scaled by the weight; outputs return with weight 1
      dispatch_BTEC, combine_BTEC = combine_BTEC, dispatch_BTEC
    x_BECD = jnp.einsum("btec,btd->becd", dispatch_BTEC.astype(self.dtype), x_BTD.astype(self.dtype))
    x_BECD = constrain(x_BECD, ACT_BECD)
    y_BECD = constrain(self._dense_ffn(x_BECD), ACT_BECD)
    return self._combine("becd,btec->btd", y_BECD, combine_BTEC)

  def _combine(self, eq, y, w):
    if self.m.float32_weight_sum:
      return jnp.einsum(eq, y.astype(jnp.float32), w.astype(jnp.float32)).astype(self.dtype)
    return jnp.einsum(eq, y, w.astype(y.dtype))

  def __call__(self, x_BTD: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
    """`dropout_key` is accepted for MlpBlock compatibility; expert hidden layers have no dropout."""
    probs_BTE, experts_BTA, weights_BTA = self.route(x_BTD)
    if self.m.sparse_matmul:
      y_BTD = self._dropless(x_BTD, experts_BTA, weights_BTA)
    else:
      y_BTD = self._with_capacity(x_BTD, experts_BTA, weights_BTA)
    if hasattr(self, "shared_experts"):
      y_BTD = y_BTD + self.shared_experts(x_BTD)
    self._sow_aux(probs_BTE, experts_BTA)
    return constrain(y_BTD.astype(self.dtype), ACT_BTD)

  def _sow_aux(self, probs_BTE, experts_BTA):
    m = self.m
    counts_E = jnp.bincount(experts_BTA.reshape(-1), length=m.num_experts).astype(jnp.float32)
    self.sow(nnx.Intermediate, "router_load", counts_E / jnp.maximum(jnp.sum(counts_E), 1.0))
    if m.load_balance_loss_weight > 0:
      self.sow(nnx.Intermediate, "lb_loss", load_balance_loss(probs_BTE, experts_BTA, m.num_experts)
               * m.load_balance_loss_weight)
    if m.routed_bias and m.routed_bias_update_rate:
      load_E = jnp.bincount(experts_BTA.reshape(-1), length=m.num_experts).astype(jnp.float32)
      self.gate.sow(nnx.Intermediate, "bias_delta", m.routed_bias_update_rate * jnp.sign(jnp.mean(load_E) - load_E))


def _limit_to_top_groups(select_BTE: jax.Array, groups: int, top_groups: int, score: str = "top2_sum") -> jax.Array:
  """Scores of experts outside the `top_groups` best groups set to -inf (group score: sum of its top-2, or its
  max with score='max' as DeepSeek-V2's group_limited_greedy)."""
  *lead, E = select_BTE.shape
  grouped = select_BTE.reshape(*lead, groups, E // groups)
  if score == "max":
    group_score = jnp.max(grouped, -1)
  else:
    top2, _ = jax.lax.top_k(grouped, min(2, E // groups))
    group_score = jnp.sum(top2, -1)
  _, best = jax.lax.top_k(group_score, top_groups)
  keep = jnp.sum(jax.nn.one_hot(best, groups, dtype=jnp.bool_), axis=-2) > 0
  return jnp.where(keep[..., None], grouped, -jnp.inf).reshape(*lead, E)


def load_balance_loss(probs_BTE: jax.Array, experts_BTA: jax.Array, num_experts: int) -> jax.Array:
  """Switch/Mixtral auxiliary loss E * sum_e f_e * P_e (1.0 for perfectly uniform routing)."""
  f_E = jnp.mean(jax.nn.one_hot(experts_BTA, num_experts, dtype=jnp.float32), axis=(0, 1, 2))
  p_E = jnp.mean(probs_BTE.astype(jnp.float32), axis=(0, 1))
  return num_experts * jnp.sum(f_E * p_E)


def dense_reference(block: MoeBlock, x_BTD: jax.Array) -> jax.Array:
  """Every expert on every token, weighted by the routing weights (zero for unchosen experts); no dropping.
  With weights_on_inputs each expert gets w * x instead (unchosen experts get 0 and are masked out)."""
  _, experts_BTA, weights_BTA = block.route(x_BTD)
  chosen_BTE = jnp.sum(jax.nn.one_hot(experts_BTA, block.m.num_experts), axis=2)
  w_BTE = jnp.sum(jax.nn.one_hot(experts_BTA, block.m.num_experts) * weights_BTA[..., None], axis=2)
  B, T, D = x_BTD.shape
  x_BECD = jnp.broadcast_to(x_BTD.astype(block.dtype)[:, None], (B, block.m.num_experts, T, D))
  if block.weights_on_inputs:
    x_BECD = x_BECD * jnp.swapaxes(w_BTE, 1, 2)[..., None].astype(block.dtype)
    w_BTE = chosen_BTE
  y_BETD = block._dense_ffn(x_BECD)
  y = jnp.einsum("betd,bte->btd", y_BETD.astype(jnp.float32), w_BTE.astype(jnp.float32)).astype(block.dtype)
  if hasattr(block, "shared_experts"):
    y = y + block.shared_experts(x_BTD)
  return y


# ---- auxiliary outputs: layer -> decoder -> train step ---------------------------------------------------------

def pop_layer_aux(layer: nnx.Module) -> dict[tuple, jax.Array]:
  """Removes a layer's sown MoE outputs: {relative path (..., 'lb_loss' | 'bias_delta'): array} ({} if dense)."""
  state = nnx.pop(layer, nnx.Intermediate)
  out = {}
  for path, var in nnx.to_flat_state(state):
    leaves = jax.tree.leaves(var.get_value() if isinstance(var, nnx.Variable) else var)
    out[tuple(path)] = leaves[0] if len(leaves) == 1 else sum(leaves)
  return out


def empty_aux() -> dict[str, Any]:
  """The decoder's auxiliary outputs before any layer: {'lb_loss': scalar (summed over layers), 'bias_delta':
  {'/'-joined param path: delta shaped like the param}, 'has_lb_loss': whether any layer produced a load-balance
  loss (static), 'router_load': {'/'-joined layer path: [E] fractions, or [units, E] for a scanned stack}}."""
  return {"lb_loss": jnp.float32(0), "bias_delta": {}, "has_lb_loss": False, "router_load": {}}


def add_aux(aux: dict[str, Any], layer_aux: dict[tuple, jax.Array], param_prefix: tuple) -> None:
  """Adds one layer's (or a scanned stack's, leaves already laid out like the params) outputs to `aux`;
  `param_prefix` is the layer's path in the model (e.g. ('decoder', 'layers', 3))."""
  for path, value in layer_aux.items():
    if path[-1] == "lb_loss":
      aux["lb_loss"] = aux["lb_loss"] + jnp.sum(value)
      aux["has_lb_loss"] = True
    elif path[-1] == "bias_delta":
      aux["bias_delta"][param_key(param_prefix + path[:-1] + ("bias",))] = value
    elif path[-1] == "router_load":
      aux["router_load"][param_key(param_prefix + path[:-1])] = value


def param_key(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def apply_bias_updates(params: nnx.State, deltas: dict[str, jax.Array]) -> nnx.State:
  """params with `delta` added to each routed-bias parameter named in `deltas` (outside the gradient)."""
  if not deltas:
    return params
  flat = []
  for path, var in nnx.to_flat_state(params):
    key = param_key(path)
    if key in deltas:
      var = var.replace(var[...] + deltas[key].astype(var[...].dtype))
    flat.append((path, var))
  return nnx.from_flat_state(flat)
