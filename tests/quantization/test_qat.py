"""Quantized training through qwix (models/quantization.py) on a tiny float32 llama: the step runs and stays close
to float, the int8 forward's error is bounded, the rules reach every dense projection of the layers and leave the
MoE router in float, accumulation and sharding agree with the plain run, and values this machine cannot run are
refused with their reason."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maxtext_like import train
from maxtext_like.config import ConfigError, load_config
from maxtext_like.models import build_model
from maxtext_like.models.quantization import QuantSpec, quantize_for_training
from maxtext_like.runtime.model_spec import model_spec
from quant_lib import integer_dots
from train_lib import run_steps

TINY = ["override_model_config=true", "base_emb_dim=32", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=8",
        "base_mlp_dim=64", "base_num_decoder_layers=2", "vocab_size=256", "max_target_length=16", "dtype=float32",
        "enable_tensorboard=false", "async_checkpointing=false", "max_prefill_predict_length=8",
        "dataset_type=synthetic", "enable_checkpointing=false", "steps=3", "log_period=1000"]
BATCH_8 = ["per_device_batch_size=8", "ici_fsdp_parallelism=1"]  # global batch 8 on one device
TINY_MOE = ["decoder_block=mixtral", "num_experts=4", "num_experts_per_tok=2", "base_moe_mlp_dim=64", "megablox=false"]


def cfg_of(tmp_path, *argv):
  return load_config(["base.yml", *TINY, f"base_output_directory={tmp_path}", "run_name=q", *argv], env={})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """run_steps(cfg(*argv), 2 steps, first `devices` devices), once per module per argument set."""
  out, tmp = {}, tmp_path_factory.mktemp("q")

  def run(argv, devices=1):
    key = (tuple(argv), devices)
    if key not in out:
      out[key] = run_steps(cfg_of(tmp, *argv), 2, jax.devices()[:devices])[1:]
    return out[key]
  return run


@pytest.mark.parametrize("scan", ["true", "false"])
def test_int8_train_step_is_close_to_float(runs, scan):
  _, lf, nf = runs([*BATCH_8, f"scan_layers={scan}"])  # the layouts initialise differently: compare like with like
  _, lq, nq = runs([*BATCH_8, f"scan_layers={scan}", "quantization=int8"])
  assert np.all(np.isfinite(lq)) and np.all(nq > 0)
  assert not np.array_equal(lq, lf)  # the matmuls really ran quantized
  np.testing.assert_allclose(lq, lf, rtol=2e-3)  # ~5.5 nats; int8 moves it by ~1e-4 relative
  np.testing.assert_allclose(nq, nf, rtol=0.05)


@pytest.mark.parametrize("scan", [True, False])
def test_int8_forward_error_is_bounded_and_reaches_every_projection(tmp_path, scan):
  spec = model_spec(cfg_of(tmp_path, f"scan_layers={str(scan).lower()}"))
  model = build_model(spec, nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, spec.vocab_size)
  quantized = quantize_for_training(model, QuantSpec("int8"))
  ref, out = jax.jit(lambda t: model(t))(tokens), jax.jit(lambda t: quantized(t))(tokens)
  rel = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
  assert 1e-4 < rel < 0.05, rel  # measured ~0.016
  # q, k, v, out, wi_0, wi_1, wo per layer (a scan traces its body once); the unembedding stays float
  assert integer_dots(lambda t: quantized(t), tokens) == 7 * (1 if scan else spec.num_decoder_layers)
  assert integer_dots(lambda t: model(t), tokens) == 0


def test_moe_router_stays_float(tmp_path):
  spec = model_spec(cfg_of(tmp_path, *TINY_MOE, "scan_layers=false"))
  model = build_model(spec, nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, spec.vocab_size)
  quantized = quantize_for_training(model, QuantSpec("int8"))
  # the attention projections only: the router is excluded by its own rule, the experts are einsums
  assert integer_dots(lambda t: quantized(t), tokens) == 4 * spec.num_decoder_layers
  np.testing.assert_allclose(quantized.decoder.layers[0].mlp.gate(jnp.ones((3, spec.emb_dim))),
                             model.decoder.layers[0].mlp.gate(jnp.ones((3, spec.emb_dim))), rtol=0, atol=0)


@pytest.mark.parametrize("quantization,low,high", [("int4", 0.03, 0.4), ("fp8", 0.01, 0.15), ("fp8_full", 0.01, 0.15),
                                                  ("fp8_e5m2", 0.01, 0.3)])
def test_other_qtypes_run_forward_and_backward(tmp_path, quantization, low, high):
  spec = model_spec(cfg_of(tmp_path))
  model = build_model(spec, nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, spec.vocab_size)
  graphdef, params, rest = nnx.split(quantize_for_training(model, QuantSpec(quantization)), nnx.Param, ...)
  logits = lambda p: nnx.merge(graphdef, p, rest)(tokens)  # noqa: E731
  ref = jax.jit(lambda t: model(t))(tokens)
  out, grads = jax.jit(jax.value_and_grad(lambda p: jnp.mean((logits(p) - ref) ** 2) ** 0.5))(params)
  rel = float(out / jnp.mean(ref ** 2) ** 0.5)
  assert low < rel < high, rel
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_int8_gradient_accumulation_matches_big_batch(runs):
  _, big, nb = runs([*BATCH_8, "scan_layers=true", "quantization=int8"])
  _, acc, na = runs(["per_device_batch_size=4", "gradient_accumulation_steps=2", "ici_fsdp_parallelism=1",
                     "quantization=int8"])
  # Not bit-equal as in float: float noise of the micro-batched reductions flips a few int8 roundings (~3e-5 here),
  # and the gradients' scales span the micro-batch rather than the batch.
  np.testing.assert_allclose(acc, big, rtol=2e-4)
  np.testing.assert_allclose(na, nb, rtol=1e-2)


def test_int8_sharded_matches_one_device(runs):
  assert len(jax.devices()) == 8
  _, l1, n1 = runs([*BATCH_8, "scan_layers=true", "quantization=int8"])
  _, l8, n8 = runs(["per_device_batch_size=1", "ici_fsdp_parallelism=8", "quantization=int8"], devices=8)
  # Float reduction order differs across 8 shards and flips a few int8 roundings: ~2e-5 at step 0, ~2e-4 after one
  # update (in float the same comparison holds to 1e-5: tests/training/test_train_step.py).
  np.testing.assert_allclose(l8, l1, rtol=5e-4)
  np.testing.assert_allclose(n8, n1, rtol=1e-2)


@pytest.mark.parametrize("value,reason", [("fp8_gpu", "NVIDIA GPU"), ("te_mxfp8", "TransformerEngine"),
                                          ("nanoo_fp8", "AMD")])
def test_hardware_values_are_refused_with_reason(tmp_path, capsys, value, reason):
  with pytest.raises(ConfigError) as e:
    cfg_of(tmp_path, f"quantization={value}")
  assert "quantization" in str(e.value) and reason in str(e.value)
  assert train.main(["base.yml", *TINY, f"base_output_directory={tmp_path}", "run_name=q", f"quantization={value}"]) == 2
  assert reason in capsys.readouterr().err


def test_bad_calibration_method_is_refused(tmp_path):
  with pytest.raises(ConfigError, match="act_quantization_calibration_method"):
    cfg_of(tmp_path, "quantization=int8", "act_quantization_calibration_method=maxabs")
  cfg_of(tmp_path, "quantization=int8", "weight_quantization_calibration_method=absmax,0.9",
         "bwd_quantization_calibration_method=fixed,-4,4")


@pytest.mark.parametrize("value", ["int8w", "int4w"])
def test_weight_only_training_quantizes_weights_not_activations(tmp_path, value):
  """int8w / int4w: the weights' fake-quantization is in the step, activations and gradients stay in float (no
  integer dot_general in the jaxpr), and the loss stays close to float."""
  cfg = cfg_of(tmp_path, f"quantization={value}")
  model = quantize_for_training(build_model(model_spec(cfg), nnx.Rngs(0)), QuantSpec(value))
  tokens = jnp.zeros((1, 8), jnp.int32)
  assert integer_dots(lambda t: model(t), tokens) == 0
  float_model = build_model(model_spec(cfg), nnx.Rngs(0))
  q, f = model(tokens), float_model(tokens)
  rel = float(jnp.linalg.norm(q - f) / jnp.linalg.norm(f))
  assert 0 < rel < (0.05 if value == "int8w" else 0.5), rel


def test_intmp_table_drives_training_rules(tmp_path):
  """quantization=intmp: a module matched by the table's key gets that entry's bits; others the __default__."""
  table = tmp_path / "mp.json"
  table.write_text('{".*/wi_0": {"w_bits": 4, "a_bits": 8}, "__default__": {"w_bits": 8, "a_bits": 8}}')
  cfg = cfg_of(tmp_path, "quantization=intmp", f"quant_cfg_path={table}", "scan_layers=false")
  model = quantize_for_training(build_model(model_spec(cfg), nnx.Rngs(0)), QuantSpec("intmp", quant_cfg_path=str(table)))
  jaxpr = jax.make_jaxpr(lambda t: model(t))(jnp.zeros((1, 8), jnp.int32))
  assert "int4" in str(jaxpr) and integer_dots(lambda t: model(t), jnp.zeros((1, 8), jnp.int32)) > 0
  _, _, losses, _ = run_steps(cfg, 2)
  assert np.isfinite(losses).all()


@pytest.mark.parametrize("content,needle", [("", "quant_cfg_path"), ("not json", "cannot be read as JSON"),
                                            ('{".*/wi_0": {"w_bits": 3}}', "w_bits=3"),
                                            ('{"(": {"w_bits": 8}}', "not a regular expression")])
def test_bad_intmp_table_is_refused_at_config_time(tmp_path, capsys, content, needle):
  argv = ["quantization=intmp"]
  if content:
    (tmp_path / "mp.json").write_text(content)
    argv.append(f"quant_cfg_path={tmp_path / 'mp.json'}")
  with pytest.raises(ConfigError, match="quant_cfg_path"):
    cfg_of(tmp_path, *argv)
  assert train.main(["base.yml", *TINY, f"base_output_directory={tmp_path}", "run_name=q", *argv]) == 2
  assert needle in capsys.readouterr().err
