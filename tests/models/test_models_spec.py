"""ModelSpec: defaults build a tiny llama, validation lists every problem, specs hash."""

import jax.numpy as jnp
import pytest

from maxtext_like.models import ModelSpec


def test_defaults_and_normalisation():
  spec = ModelSpec(dtype="bfloat16", mlp_activations=["gelu", "linear"])
  assert spec.dtype == jnp.bfloat16 and spec.weight_dtype == jnp.float32
  assert spec.mlp_activations == ("gelu", "linear")
  assert spec.remat_locations["decoder_layer_input"] == "device"
  assert hash(spec) == hash(ModelSpec(dtype=jnp.bfloat16, mlp_activations=("gelu", "linear")))
  assert ModelSpec(remat_locations={"context": "offload"}).remat_locations["context"] == "offload"


def test_validation_reports_all_problems():
  with pytest.raises(ValueError) as err:
    ModelSpec(num_query_heads=6, num_kv_heads=4, attention="splash", remat_policy="sometimes",
              remat_locations={"context": "disk"}, mlp_activations=("silu", "linear", "relu"), head_dim=15)
  message = str(err.value)
  for fragment in ("multiple of num_kv_heads", "attention='splash'", "remat_policy='sometimes'",
                   "remat_locations['context']='disk'", "1 or 2 entries", "head_dim=15"):
    assert fragment in message
