"""Layer stacks with a period (`LayerStack.cycle`): interleaved MoE layers scanned in units equal the loop layout,
with and without a KV cache, and the conversion layout maps one onto the other."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maxtext_like.convert import layout
from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.moe import MoeSpec
from models_testlib import jit

SPEC = ModelSpec(decoder_block="qwen3_moe", vocab_size=64, emb_dim=32, num_query_heads=4, num_kv_heads=2, head_dim=8,
                 mlp_dim=40, num_decoder_layers=4, use_qk_norm=True, scan_layers=False, max_target_length=16,
                 moe=MoeSpec(num_experts=4, num_experts_per_tok=2, mlp_dim=24, interleave_moe_layer_step=2,
                             load_balance_loss_weight=0.01))


def scanned_from_loop(loop_model, spec):
  """The scanned model holding the loop model's parameters, placed by the converter's layout functions."""
  flat = dict(layout.iter_unscanned(SPEC, nnx.state(loop_model, nnx.Param)))
  shapes = {}
  for path, a in flat.items():
    key, unit = layout.stacked_key(spec, path)
    shapes.setdefault(key, []).append((unit, a))
  arrays = {k: v[0][1] if v[0][0] is None else np.stack([a for _, a in sorted(v, key=lambda t: t[0])],
                                                         axis=spec.param_scan_axis) for k, v in shapes.items()}
  model = build_model(spec, nnx.Rngs(1))
  nnx.update(model, layout.fill_state(spec, arrays))
  return model, flat


def forward(model, toks):
  """(logits, aux) of the model's full forward, jitted: op-by-op dispatch of the loop layout costs seconds."""
  graphdef, state = nnx.split(model)
  return jit(lambda s, t: nnx.merge(graphdef, s)(t, return_aux=True))(state, toks)


def test_interleaved_moe_scanned_equals_loop():
  loop = build_model(SPEC, nnx.Rngs(0))
  spec = SPEC.replace(scan_layers=True)
  scanned, flat = scanned_from_loop(loop, spec)
  assert "decoder.layers.1.mlp.gate.kernel" in flat and "decoder.layers.0.mlp.wi_0.kernel" in flat  # dense, MoE
  assert jax.tree.leaves(nnx.state(scanned.decoder.layers))[0].shape[spec.param_scan_axis] == 2  # 2 units of 2
  toks = (jnp.arange(24).reshape(2, 12) * 5) % 64
  want, want_aux = forward(loop, toks)
  got, got_aux = forward(scanned, toks)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(got_aux["lb_loss"], want_aux["lb_loss"], rtol=1e-5)
  (got_load,) = got_aux["router_load"].values()  # [units, E] of the MoE sublayer = loop layers 1 and 3
  want_load = np.stack([want_aux["router_load"][f"decoder/layers/{i}/mlp"] for i in (1, 3)])
  np.testing.assert_allclose(got_load, want_load, atol=1e-6)
  # back again: iter_unscanned of the scanned model gives the loop model's parameters
  again = dict(layout.iter_unscanned(spec, nnx.state(scanned, nnx.Param)))
  assert set(again) == set(flat) and all(np.array_equal(again[k], flat[k]) for k in flat)
  # KV-cache decode of the scanned model equals its full forward
  logits, cache = scanned.prefill(toks[:, :8], max_length=16)
  step_logits, _ = scanned.decode_step(toks[:, 8:9], cache)
  np.testing.assert_allclose(step_logits[:, 0], want[:, 8], atol=1e-5)
  np.testing.assert_allclose(logits, want[:, :8], atol=1e-5)
