"""MoeBlock: dispatch modes equal the dense reference (values and gradients), routing options, capacity dropping,
shared experts, auxiliary outputs, ModelSpec/MoeSpec validation."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models import moe as moe_lib
from maxtext_like.models.moe import MoeBlock, MoeSpec, dense_reference, load_balance_loss

D = 32


def block(seed=0, **moe):
  m = dict(num_experts=8, num_experts_per_tok=2, mlp_dim=24)
  spec = ModelSpec(decoder_block="mixtral", emb_dim=D, moe=MoeSpec(**{**m, **moe}))
  return MoeBlock(spec.mlp_spec, spec.moe, rngs=nnx.Rngs(seed))


def x_BTD(B=2, T=12, seed=1):
  return jax.random.normal(jax.random.key(seed), (B, T, D))


def run(blk, x, **moe):
  blk.m = blk.m.replace(**moe)
  return blk(x)


@pytest.mark.parametrize("moe", [dict(), dict(norm_topk_prob=True), dict(routed_score_func="sigmoid", norm_topk_prob=True,
                                                                         routed_scaling_factor=2.5),
                                 dict(shared_experts=2), dict(n_routing_groups=4, topk_routing_group=2)])
def test_dropless_and_capacity_equal_dense_reference(moe):
  blk, x = block(**moe), x_BTD()
  ref = dense_reference(blk, x)
  for impl in ("blocked", "ragged_dot"):
    blk.gmm_impl = impl
    np.testing.assert_allclose(run(blk, x, sparse_matmul=True), ref, atol=2e-6)
  np.testing.assert_allclose(run(blk, x, sparse_matmul=False, capacity_factor=-1.0), ref, atol=2e-6)


def test_gradients_equal_dense_reference():
  blk, x = block(norm_topk_prob=True), x_BTD()
  graphdef, params = nnx.split(blk)

  def loss(p, x, mode):
    b = nnx.merge(graphdef, p)
    y = dense_reference(b, x) if mode == "dense" else b(x)
    return jnp.sum(jnp.sin(y))

  g_ref = jax.grad(loss, argnums=(0, 1))(params, x, "dense")
  for sparse, impl in ((True, "blocked"), (True, "ragged_dot"), (False, "blocked")):
    blk.m, blk.gmm_impl = blk.m.replace(sparse_matmul=sparse), impl
    graphdef, _ = nnx.split(blk)
    g = jax.grad(loss, argnums=(0, 1))(params, x, "moe")
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
      np.testing.assert_allclose(a, b, atol=1e-5)


def test_capacity_drops_overflow_tokens():
  """C = ceil(T * A / E * cf) per sequence: with all tokens routed alike, only the first C get the expert."""
  blk, x = block(num_experts=4, num_experts_per_tok=1), x_BTD(B=1, T=8)
  same_x = jnp.broadcast_to(x[:, :1], x.shape)  # identical tokens -> all routed to the same expert
  full = run(blk, same_x, sparse_matmul=False, capacity_factor=-1.0)
  dropped = run(blk, same_x, sparse_matmul=False, capacity_factor=1.0)  # C = ceil(8 * 1 / 4) = 2
  assert blk.capacity(8) == 2
  np.testing.assert_allclose(dropped[:, :2], full[:, :2], atol=1e-6)
  np.testing.assert_allclose(dropped[:, 2:], 0.0, atol=1e-7)
  assert float(jnp.abs(full[:, 2:]).min()) > 0


def test_routing_options():
  blk, x = block(norm_topk_prob=True), x_BTD()
  probs, experts, w = blk.route(x)
  np.testing.assert_allclose(jnp.sum(w, -1), 1.0, rtol=1e-6)
  top = jax.lax.top_k(probs, 2)[1]
  assert np.array_equal(np.sort(experts, -1), np.sort(top, -1))
  # sigmoid scores, scaling factor, no renormalisation
  blk.m = blk.m.replace(routed_score_func="sigmoid", norm_topk_prob=False, routed_scaling_factor=3.0)
  probs, experts, w = blk.route(x)
  np.testing.assert_allclose(w, 3.0 * jnp.take_along_axis(jax.nn.sigmoid(blk.gate(x)), experts, -1), rtol=1e-6)
  # group-limited routing: chosen experts lie in the top-k groups only
  blk.m = blk.m.replace(routed_score_func="softmax", n_routing_groups=4, topk_routing_group=1)
  _, experts, _ = blk.route(x)
  assert np.all(experts[..., 0] // 2 == experts[..., 1] // 2)  # 8 experts / 4 groups, one group kept
  # random routing does not depend on the input
  blk.m = blk.m.replace(n_routing_groups=-1, topk_routing_group=-1, use_random_routing=True)
  assert np.array_equal(blk.route(x)[1], blk.route(x + 1.0)[1])


def test_routed_bias_changes_selection_not_weights():
  blk, x = block(routed_bias=True, routed_bias_update_rate=0.01), x_BTD()
  probs, experts, w = blk.route(x)
  blk.gate.bias[...] = jnp.zeros(8).at[5].set(10.0)  # expert 5 always selected, weighted by its unbiased score
  _, experts_b, w_b = blk.route(x)
  assert np.all(np.any(experts_b == 5, -1))
  np.testing.assert_allclose(w_b, jnp.take_along_axis(probs, experts_b, -1), rtol=1e-6)
  blk(x)
  aux = moe_lib.pop_layer_aux(blk)
  assert set(aux) == {("gate", "bias_delta"), ("router_load",)}
  delta = aux[("gate", "bias_delta")]
  assert delta.shape == (8,) and float(aux[("router_load",)][5]) >= 1 / 2  # expert 5 takes one of 2 copies per token
  assert float(delta[5]) == pytest.approx(-0.01)  # overloaded expert: bias goes down


def test_load_balance_loss():
  E = 4
  uniform = jnp.full((1, 8, E), 1.0 / E)
  balanced = jnp.arange(8).reshape(1, 8, 1) % E
  assert float(load_balance_loss(uniform, balanced, E)) == pytest.approx(1.0)
  skewed = jnp.zeros((1, 8, 1), jnp.int32)
  peaked = jax.nn.one_hot(jnp.zeros((1, 8), jnp.int32), E)
  assert float(load_balance_loss(peaked, skewed, E)) == pytest.approx(E)


def test_model_returns_lb_loss_only_when_asked():
  spec = ModelSpec(decoder_block="mixtral", vocab_size=64, emb_dim=D, head_dim=8,
                   moe=MoeSpec(num_experts=4, num_experts_per_tok=2, mlp_dim=24, load_balance_loss_weight=0.1))
  model = build_model(spec, nnx.Rngs(0))
  toks = jnp.arange(12).reshape(2, 6)
  _, aux = model(toks, return_aux=True)
  assert aux["has_lb_loss"] and 0.1 <= float(aux["lb_loss"]) / 2 <= 0.4  # 2 layers, each >= weight * 1
  (load,) = aux["router_load"].values()  # router statistics: per layer, each expert's share of routed copies
  assert load.shape == (2, 4) and np.allclose(np.sum(load, -1), 1.0)
  assert model(toks).shape == (2, 6, 64)  # logits only; no state left on the model
  assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))


def test_first_dense_layers_and_spec_checks():
  spec = ModelSpec(decoder_block="mixtral", vocab_size=64, emb_dim=D, head_dim=8, num_decoder_layers=3,
                   moe=MoeSpec(num_experts=4, num_experts_per_tok=2, mlp_dim=24, first_num_dense_layers=1))
  model = build_model(spec, nnx.Rngs(0))
  assert hasattr(model.decoder.dense_layers, "mlp") and hasattr(model.decoder.moe_layers.mlp, "wi_0")
  assert model(jnp.ones((1, 4), jnp.int32)).shape == (1, 4, 64)
  inter = spec.replace(scan_layers=False, moe=spec.moe.replace(first_num_dense_layers=0, interleave_moe_layer_step=2))
  layers = build_model(inter, nnx.Rngs(0)).decoder.layers
  assert [isinstance(layer.mlp, MoeBlock) for layer in layers] == [False, True, False]
  with pytest.raises(ValueError, match="scan_layers=false"):
    build_model(inter.replace(scan_layers=True), nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_experts_per_tok"):
    MoeSpec(num_experts=2, num_experts_per_tok=3)
  with pytest.raises(ValueError, match="n_routing_groups"):
    MoeSpec(num_experts=6, n_routing_groups=4, topk_routing_group=1)
  with pytest.raises(ValueError, match="not used by decoder_block='llama2'"):
    ModelSpec(decoder_block="llama2", moe=MoeSpec())


def test_megablox_falls_back_with_a_notice(caplog):
  moe_lib._MEGABLOX_NOTICE.clear()
  with caplog.at_level(logging.WARNING, logger="maxtext_like.models.moe"):
    blk = block(megablox=True)
  assert "ragged_dot" in caplog.text
  x = x_BTD()
  np.testing.assert_allclose(blk(x), dense_reference(blk, x), atol=2e-6)
