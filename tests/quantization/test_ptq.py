"""Post-training quantization for serving (models/ptq.py, runtime/quantized.py): the rules reach every dense layer of
every family, quantized logits stay close to float (error bounded per scheme), a quantized checkpoint holds integer
arrays, is a fraction of the float matmul weights on disk and reloads bit-exactly, the engine decodes a quantized
model exactly as its full forward does (also sharded), and bad input is refused with the reason."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import parity_cases
from maxtext_like import eval as eval_entry
from maxtext_like.config import ConfigError, load_config
from maxtext_like.convert.__main__ import main as convert_main
from maxtext_like.inference.engine import Engine, unscanned
from maxtext_like.inference.loading import load_model
from maxtext_like.models import build_model, ptq
from maxtext_like.models.quantization import QuantSpec
from maxtext_like.runtime.checkpoints import CheckpointError
from quant_lib import integer_dots

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=256", "max_target_length=32", "dtype=float32",
        "max_prefill_predict_length=16", "per_device_batch_size=2", "enable_tensorboard=false",
        "async_checkpointing=false", "dataset_type=synthetic", "log_period=1000"]


def layer_denses(model) -> list[str]:
  """Module paths of the decoder layers' DenseGenerals other than MoE routers: what PTQ must quantize."""
  return [p for p in ptq.dense_layers(model) if not p.endswith("/gate")]


def rel_error(a, b) -> float:
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("block", sorted(parity_cases.CASES))
def test_ptq_reaches_every_dense_layer_of_every_family(block, monkeypatch):
  name = next(iter(parity_cases.CASES[block]))
  for obj, attr, value in parity_cases.CASES[block][name].patches:  # as the parity tests run the case
    monkeypatch.setattr(obj, attr, value)
  spec = parity_cases.spec(block, name).replace(scan_layers=False)
  model = build_model(spec, nnx.Rngs(0))
  quantized = ptq.quantize_for_serving(model, QuantSpec("int8"))
  wanted = layer_denses(model)
  assert wanted and sorted(ptq.quantized_kernels(quantized)) == sorted(wanted)
  for kernel in ptq.quantized_kernels(quantized).values():
    assert kernel.array.qvalue.dtype == jnp.int8 and jnp.issubdtype(kernel.array.scale.dtype, jnp.floating)
  tokens = jax.random.randint(jax.random.key(1), (1, 12), 1, spec.vocab_size)
  forward = nnx.jit(lambda m, t: m(t))
  # every quantized kernel's matmul runs on integers (a kernel may be used more than once, e.g. MLA's up-projections)
  assert integer_dots(lambda t: quantized(t), tokens) >= len(wanted)
  assert integer_dots(lambda t: model(t), tokens) == 0
  assert rel_error(forward(quantized, tokens), forward(model, tokens)) < 0.1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A float checkpoint of the tiny llama after a few steps (trained weights have structure random ones lack)."""
  from maxtext_like import train
  out = tmp_path_factory.mktemp("ptq")
  argv = ["base.yml", *TINY, f"base_output_directory={out}", "run_name=float", "steps=6", "checkpoint_period=6",
          "learning_rate=3e-3"]
  assert train.main(argv) == 0
  return out, os.path.join(out, "float", "checkpoints", "6")


def cfg_for(trained, *argv):
  out, path = trained
  return load_config(["base.yml", *TINY, f"base_output_directory={out}", "run_name=float",
                      f"load_parameters_path={path}", *argv], env={})


# measured on the trained tiny model: int8w 0.008, int8 0.015, int4w 0.136, int4w in 4 tiles 0.131, fp8 0.056
@pytest.mark.parametrize("scheme,extra,bound", [("int8w", [], 0.02), ("int8", [], 0.05), ("int4w", [], 0.25),
                                                ("int4w", ["quantization_local_shard_count=4"], 0.25),
                                                ("fp8", [], 0.15)])
def test_ptq_logits_close_to_float(trained, scheme, extra, bound):
  tokens = jnp.asarray(np.random.RandomState(0).randint(1, 256, (2, 24)), jnp.int32)
  ref = load_model(cfg_for(trained)).logits(tokens)
  loaded = load_model(cfg_for(trained, f"quantization={scheme}", *extra))
  err = rel_error(loaded.logits(tokens), ref)
  print(f"{scheme} {extra}: relative logit error {err:.4f}")
  assert 0 < err < bound


def test_quantized_checkpoint_is_integer_small_and_reloads_bit_exactly(trained, tmp_path, capsys):
  out, float_path = trained
  sizes = {}
  for scheme in ("int8w", "int4w"):
    qdir = tmp_path / scheme
    assert convert_main(["quantize", "base.yml", *TINY, f"base_output_directory={out}", "run_name=float",
                         f"quantization={scheme}", f"load_parameters_path={float_path}",
                         f"save_quantized_params_path={qdir}"]) == 0
    assert str(qdir) in capsys.readouterr().out
    meta = ocp.StandardCheckpointer().metadata(str(qdir / "state"))
    flat = {"/".join(map(str, k)): v for k, v in
            jax.tree_util.tree_flatten_with_path(getattr(meta, "item_metadata", meta))[0]
            for k in [tuple(getattr(p, "key", p) for p in k)]}
    qvalues = {k: v for k, v in flat.items() if k.endswith("qvalue")}
    assert len(qvalues) == 7 * 2  # q, k, v, out, wi_0, wi_1, wo in 2 layers
    assert all(v.dtype == (jnp.int8 if scheme == "int8w" else jnp.int4) for v in qvalues.values())
    q = load_model(cfg_for(trained, f"quantization={scheme}"))
    sizes[scheme] = ptq.matmul_weight_bytes(q.model)
    reloaded = load_model(cfg_for(trained, f"quantization={scheme}", "checkpoint_is_quantized=true",
                                  f"load_parameters_path={qdir}"))
    tokens = jnp.arange(1, 17, dtype=jnp.int32)[None]
    np.testing.assert_array_equal(reloaded.logits(tokens), q.logits(tokens))
  float_model = unscanned(load_model(cfg_for(trained)).model)
  float_bytes = ptq.matmul_weight_bytes(float_model)
  assert sizes["int8w"] <= 0.30 * float_bytes and sizes["int4w"] <= 0.17 * float_bytes, (sizes, float_bytes)


def test_quantized_checkpoint_for_another_model_is_refused(trained, tmp_path, capsys):
  out, float_path = trained
  qdir = tmp_path / "q"
  assert convert_main(["quantize", "base.yml", *TINY, f"base_output_directory={out}", "run_name=float",
                       "quantization=int8w", f"load_parameters_path={float_path}",
                       f"save_quantized_params_path={qdir}"]) == 0
  with pytest.raises(CheckpointError, match="base_mlp_dim: saved 128, configured 96"):
    load_model(cfg_for(trained, "quantization=int8w", "checkpoint_is_quantized=true", f"load_parameters_path={qdir}",
                       "base_mlp_dim=96"))
  with pytest.raises(CheckpointError, match="quantization: saved 'int8w', configured 'int4w'"):
    load_model(cfg_for(trained, "quantization=int4w", "checkpoint_is_quantized=true", f"load_parameters_path={qdir}"))
  capsys.readouterr()
  argv = ["base.yml", *TINY, f"base_output_directory={out}", "run_name=float", "quantization=int8w",
          "checkpoint_is_quantized=true", f"load_parameters_path={qdir}", "base_num_kv_heads=4"]
  assert eval_entry.main(argv) == 2
  err = capsys.readouterr().err
  assert "base_num_kv_heads: saved 2, configured 4" in err and "Traceback" not in err
  # a float checkpoint read as quantized, and writing over an existing quantized checkpoint
  with pytest.raises(CheckpointError, match="no saved config|not quantized"):
    load_model(cfg_for(trained, "quantization=int8w", "checkpoint_is_quantized=true"))
  assert convert_main(["quantize", "base.yml", *TINY, f"base_output_directory={out}", "run_name=float",
                       "quantization=int8w", f"load_parameters_path={float_path}",
                       f"save_quantized_params_path={qdir}"]) == 2
  assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("argv,key", [(["checkpoint_is_quantized=true", "load_parameters_path=/x"], "needs the scheme"),
                                      (["quantization=int8", "checkpoint_is_quantized=true"], "needs load_parameters_path"),
                                      (["save_quantized_params_path=/tmp/x"], "needs a quantization scheme")])
def test_quantized_checkpoint_keys_need_their_partners(tmp_path, argv, key):
  with pytest.raises(ConfigError, match=key):
    load_config(["base.yml", *TINY, f"base_output_directory={tmp_path}", *argv], env={})


def greedy_by_full_forward(model, prompt, n):
  """n greedy tokens, each from a full forward over the whole sequence so far (no cache)."""
  ids = list(prompt)
  fwd = nnx.jit(lambda m, t: m(t))
  for _ in range(n):
    ids.append(int(jnp.argmax(fwd(model, jnp.asarray([ids], jnp.int32))[0, -1])))
  return ids[len(prompt):]


def engine_greedy(engine, params, prompt, n):
  """n greedy tokens of `prompt` through the engine: prefill, insert into slot 0, n - 1 generate steps."""
  prefix = engine.prefill_ids(params, prompt)
  state = engine.insert(prefix, engine.init_decode_state(), 0)
  toks = [int(prefix.tokens[0])]
  for _ in range(n - 1):
    state, _ = engine.generate(params, state)
    toks.append(int(state.tokens_B[0]))
  return toks


@pytest.mark.parametrize("scheme", ["int8", "int4w"])
def test_engine_decodes_a_quantized_model_as_its_full_forward(trained, scheme):
  cfg = cfg_for(trained, f"quantization={scheme}")
  model = load_model(cfg).model
  engine = Engine(cfg, model, num_slots=2)
  prompt = [5, 17, 33, 2, 250, 9, 41]
  assert engine_greedy(engine, engine.load_params(), prompt, 8) == greedy_by_full_forward(model, prompt, 8)


def test_sharded_engine_serves_quantized_weights(trained):
  """fsdp x tensor over 4 devices: quantized values split like the float kernels, scales along the axes they keep;
  replicate_quant_scale replicates the scales. Greedy tokens equal the one-device engine's."""
  from maxtext_like.config.resolve import resolve
  from maxtext_like.training.state import make_mesh
  prompt = [3, 1, 4, 1, 5, 9, 2, 6]
  outs = []
  for mesh_args in ([], ["ici_fsdp_parallelism=2", "ici_tensor_parallelism=2"],
                    ["ici_fsdp_parallelism=2", "ici_tensor_parallelism=2", "replicate_quant_scale=true"]):
    cfg = cfg_for(trained, "quantization=int8w", *mesh_args)
    model = load_model(cfg).model
    mesh = make_mesh(resolve(cfg, 4), jax.devices()[:4]) if mesh_args else None
    engine = Engine(cfg, model, mesh=mesh, num_slots=2)
    params = engine.load_params()
    if mesh_args:
      kernel = params["decoder"]["layers"][0]["mlp"]["wi_0"]["kernel"]
      scale = kernel.array.scale
      assert len(kernel.array.qvalue.sharding.device_set) == 4
      assert scale.sharding.is_fully_replicated == ("replicate_quant_scale=true" in mesh_args)
    outs.append(engine_greedy(engine, params, prompt, 6))
  assert outs[1] == outs[0] and outs[2] == outs[0]


def test_eval_entry_point_reports_float_and_quantized_perplexity(trained, capsys):
  out, path = trained
  base = ["base.yml", *TINY, f"base_output_directory={out}", "run_name=float", f"load_parameters_path={path}",
          "eval_steps=2"]
  results = {}
  for scheme in ("", "int8w"):
    assert eval_entry.main([*base, *([f"quantization={scheme}"] if scheme else [])]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc == json.load(open(os.path.join(out, "float", "eval.json")))
    assert doc["batches"] == 2 and doc["tokens"] > 0 and np.isclose(doc["perplexity"], np.exp(doc["loss"]))
    results[scheme or "float"] = doc
  assert results["int8w"]["quantization"] == "int8w" and results["float"]["quantization"] == "float"
  assert abs(results["int8w"]["loss"] / results["float"]["loss"] - 1) < 0.01
  assert eval_entry.main([*base, "load_parameters_path=/no/such/checkpoint"]) == 2
  # through a KV cache (how quantize_kvcache is measured), packed eval batches give the float loss exactly
  cfg = cfg_for(trained, "eval_steps=2")
  assert np.isclose(eval_entry.evaluate(cfg, through_cache=True)["loss"], results["float"]["loss"], rtol=1e-5)
  kv8 = eval_entry.evaluate(cfg_for(trained, "eval_steps=2", "quantize_kvcache=true"))
  assert kv8["kv_cache"] == "int8 (heads_and_dkv)" and 0 < abs(kv8["loss"] / results["float"]["loss"] - 1) < 0.01


def test_microbenchmark_model_size_counts_quantized_bytes(trained):
  """The microbenchmark's model size is the bytes as stored: int8 values + scales, int4 at half a byte."""
  from maxtext_like.inference.microbenchmark import _pytree_summary
  sizes = {}
  for scheme in ("", "int8w", "int4w"):
    model = load_model(cfg_for(trained, *([f"quantization={scheme}"] if scheme else []))).model
    params = Engine(cfg_for(trained), model, num_slots=1).load_params()
    sizes[scheme] = _pytree_summary(params)[1]
    assert sizes[scheme] == ptq.tree_bytes(params)
  float_layers = ptq.matmul_weight_bytes(unscanned(load_model(cfg_for(trained)).model))
  # the embedding, unembedding and norms stay float: the difference is the layers' kernels
  assert sizes[""] - sizes["int8w"] > 0.7 * float_layers and sizes[""] - sizes["int4w"] > 0.83 * float_layers
