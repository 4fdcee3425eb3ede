"""Parameter names/counts and logical-axis sharding on 8 fake CPU devices."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.sharding import AxisType, PartitionSpec as P

from maxtext_like.models import build_model, count_params
from maxtext_like.models.sharding import activation_sharding, constrain, logical_to_mesh_sharding
from models_testlib import TINY, build, jit

RULES = [
    ("activation_batch", ["data", "fsdp"]),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("embed", ["fsdp", "sequence"]),  # 'sequence' is not in the mesh: dropped
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
]


def llama_param_count(s):
  """Closed form for the llama block."""
  attention = s.emb_dim * s.head_dim * (2 * s.num_query_heads + 2 * s.num_kv_heads)
  mlp = s.emb_dim * s.mlp_dim * (len(s.mlp_activations) + 1)
  layer = attention + mlp + 2 * s.emb_dim
  logits = 0 if s.logits_via_embedding else s.emb_dim * s.vocab_size
  return s.vocab_size * s.emb_dim + s.num_decoder_layers * layer + s.emb_dim + logits


@pytest.mark.parametrize("changes", [
    dict(),
    dict(scan_layers=True, logits_via_embedding=True, mlp_activations=("relu",)),
    dict(num_decoder_layers=32, emb_dim=4096, num_query_heads=32, num_kv_heads=8, head_dim=128, mlp_dim=14336,
         vocab_size=128256, scan_layers=True),  # llama3-8b shapes, abstractly
])
def test_count_params_closed_form(changes):
  spec = TINY.replace(**changes)
  assert count_params(spec) == llama_param_count(spec)
  if spec.emb_dim == 4096:
    assert count_params(spec) == 8_030_261_248


def test_parameter_names_and_logical_axes():
  names = {
      "/".join(map(str, path)): (v.shape, v.get_metadata()["out_sharding"])
      for path, v in nnx.to_flat_state(nnx.state(build(TINY.replace(scan_layers=True)), nnx.Param))
  }
  D, N, K, H, F, V, L = 32, 4, 2, 8, 64, 128, 2
  assert names == {
      "token_embedder/embedding": ((V, D), ("vocab", "embed")),
      "decoder/decoder_norm/scale": ((D,), ("norm",)),
      "decoder/logits_dense/kernel": ((D, V), ("embed", "vocab")),
      "decoder/layers/pre_self_attention_layer_norm/scale": ((D, L), ("norm", "layers")),
      "decoder/layers/post_self_attention_layer_norm/scale": ((D, L), ("norm", "layers")),
      "decoder/layers/self_attention/query/kernel": ((D, L, N, H), ("embed", "layers", "heads", "kv")),
      "decoder/layers/self_attention/key/kernel": ((D, L, K, H), ("embed", "layers", "kv_heads", "kv")),
      "decoder/layers/self_attention/value/kernel": ((D, L, K, H), ("embed", "layers", "kv_heads", "kv")),
      "decoder/layers/self_attention/out/kernel": ((N, L, H, D), ("heads", "layers", "kv", "embed")),
      "decoder/layers/mlp/wi_0/kernel": ((D, L, F), ("embed", "layers", "mlp")),
      "decoder/layers/mlp/wi_1/kernel": ((D, L, F), ("embed", "layers", "mlp")),
      "decoder/layers/mlp/wo/kernel": ((F, L, D), ("mlp", "layers", "embed")),
  }


def test_sharded_init_and_forward_match_unsharded():
  spec = TINY.replace(scan_layers=True)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
  abstract = nnx.state(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))))
  shardings = logical_to_mesh_sharding(abstract, mesh, RULES)
  wi_0 = shardings["decoder"]["layers"]["mlp"]["wi_0"]["kernel"].get_value()
  assert wi_0.spec == P("fsdp", None, "tensor")
  assert shardings["token_embedder"]["embedding"].get_value().spec == P("tensor", "fsdp")

  # real init, materialised directly into the shardings ('rbg' keys compile faster on CPU than threefry)
  rngs = lambda: nnx.Rngs(jax.random.key(0, impl="rbg"))
  state = jax.jit(lambda: nnx.state(build_model(spec, rngs())), out_shardings=shardings)()
  kernel = state["decoder"]["layers"]["mlp"]["wi_0"]["kernel"].get_value()
  assert kernel.sharding.spec == P("fsdp", None, "tensor")
  assert sum(x.size for x in jax.tree.leaves(state)) == count_params(spec)

  graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))))
  tokens = jax.random.randint(jax.random.key(6), (4, 8), 0, spec.vocab_size)
  forward = lambda st, t: nnx.merge(graphdef, st)(t)
  with activation_sharding(mesh, RULES):
    sharded = jit(forward)(state, tokens)
  unsharded = jit(forward)(jax.device_get(state), tokens)
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(unsharded), atol=1e-5)


def test_constrain_is_noop_without_rules():
  x = jnp.ones((4, 8, 32))
  lowered = jax.jit(lambda x: constrain(x, ("activation_batch", "activation_length", "activation_embed"))).lower(x)
  assert "sharding_constraint" not in lowered.as_text()
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
  with activation_sharding(mesh, RULES):
    lowered = jax.jit(lambda x: constrain(x, ("activation_batch", "activation_length", "activation_embed"))).lower(x)
  assert 'sharding_constraint %arg0 <@mesh, [{"data", "fsdp"}, {}, {}]>' in lowered.as_text()
