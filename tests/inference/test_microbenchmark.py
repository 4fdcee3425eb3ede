"""`python -m maxtext_like.inference_microbenchmark` in-process on a tiny float32 llama: MaxText's result keys with
positive figures on stdout and in the log file, and bad keys refused with exit 2 before any work."""

import json

import pytest

from maxtext_like import inference_microbenchmark
from maxtext_like.inference.microbenchmark import measure_memory_bandwidth, prefill_tflops_per_device

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=4096", "max_target_length=32", "dtype=float32",
        "enable_tensorboard=false", "max_prefill_predict_length=16", "per_device_batch_size=2"]

PREFILL = {"time_in_ms", "total_tflops_per_device", "tflops_per_sec_per_device"}
AUTOREGRESSIVE = {"step_in_ms", "step_in_ms_per_seq", "global_batch_size", "total_throughput_tokens_per_second",
                  "bw_per_device_GB_per_second"}
SIZES = {"model_size_in_gb", "cache_size_in_gb", "model_params_in_billions"}


def _run(tmp_path, capsys, *extra):
  # the lengths quoted as MaxText's CLI wants them
  argv = ["base.yml", *TINY, f"base_output_directory={tmp_path}", "run_name=mb", "inference_microbenchmark_loop_iters=2",
          "inference_microbenchmark_prefill_lengths='8,16'", *extra]
  code = inference_microbenchmark.main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def _positive(d: dict, keys: set) -> None:
  assert set(d) >= keys, keys - set(d)
  for k in keys:
    assert d[k] > 0, (k, d[k])


def test_results_have_maxtexts_keys(tmp_path, capsys):
  log = tmp_path / "results.json"
  code, out, err = _run(tmp_path, capsys, "inference_microbenchmark_stages=prefill,generate,prefill-multisampling",
                        "inference_microbenchmark_num_samples=[1,3]", f"inference_microbenchmark_log_file_path={log}")
  assert code == 0, err
  res = json.loads(out.strip().splitlines()[-1])
  assert json.loads(log.read_text()) == res
  for length in ("8", "16"):
    _positive(res["prefill"][length], PREFILL)
    assert res["insert"][length]["time_in_ms"] != 0
    assert set(res["prefill-multisampling"][length]) == {"1", "3"}
    for n in ("1", "3"):
      _positive(res["prefill-multisampling"][length][n], {"time_in_ms"})
  # the formula's weight term grows with L and its attention term with L^2
  assert res["prefill"]["16"]["total_tflops_per_device"] > 2 * res["prefill"]["8"]["total_tflops_per_device"]
  _positive(res["autoregressive"], AUTOREGRESSIVE)
  assert res["autoregressive"]["global_batch_size"] == 2
  ar = res["autoregressive"]
  assert ar["total_throughput_tokens_per_second"] == pytest.approx(2000 / ar["step_in_ms"])
  _positive(res["memory_bandwidth"], {"measured_GB_per_second", "read_GB_per_second", "copy_GB_per_second",
                                         "ar_fraction_of_measured"})
  _positive(res["sizes"], SIZES)
  from maxtext_like.api import count_params, load_config
  cfg = load_config(["base.yml", *TINY, f"base_output_directory={tmp_path}"], env={})
  assert res["sizes"]["model_params_in_billions"] * 1e9 == pytest.approx(count_params(cfg))
  assert res["sizes"]["model_size_in_gb"] * 1e9 == pytest.approx(4 * count_params(cfg))  # float32
  assert "AR step average time" in out and "PREFILL_BUCKET_SIZE_TO_MS" in out


def test_paged_engine_generate_stage(tmp_path, capsys):
  code, out, err = _run(tmp_path, capsys, "attention=paged", "pagedattn_tokens_per_page=8", "pagedattn_num_pages=16",
                        "inference_microbenchmark_stages=generate")
  assert code == 0, err
  res = json.loads(out.strip().splitlines()[-1])
  assert set(res) == {"autoregressive", "memory_bandwidth", "sizes"}
  _positive(res["autoregressive"], AUTOREGRESSIVE)


@pytest.mark.parametrize("bad", ["inference_microbenchmark_stages=prefil,generate",
                                 "inference_microbenchmark_prefill_lengths=8,64",
                                 "inference_microbenchmark_prefill_lengths=8,x",
                                 "inference_microbenchmark_loop_iter=3"])
def test_bad_key_exits_2(tmp_path, capsys, bad):
  code, out, err = _run(tmp_path, capsys, bad)
  assert code == 2
  assert bad.split("=")[0] in err and "\n" not in err.strip()
  assert out == ""


def test_prefill_tflops_is_maxtexts_formula():
  class Spec:
    num_query_heads, num_decoder_layers, head_dim = 4, 2, 16
  L, P = 128, 1_000_000
  want = (2 * P * L + 4 * 4 * 2 * 16 * L**2 / 2) / 1e12
  assert prefill_tflops_per_device(P, L, Spec, devices=1) == pytest.approx(want)
  assert prefill_tflops_per_device(P, L, Spec, devices=4) == pytest.approx(want / 4)


def test_memory_bandwidth_probe_is_plausible():
  bw = measure_memory_bandwidth(8 << 20, probes=3)
  assert 1e8 < bw["read"] <= bw["best"] < 1e13 and 1e8 < bw["copy"] <= bw["best"]


def test_help_prints_usage(capsys):
  assert inference_microbenchmark.main(["--help"]) == 0
  out = capsys.readouterr().out
  assert "maxtext_like.inference_microbenchmark" in out and "inference_microbenchmark_stages" in out


def test_the_timed_loops_draw_the_keys_maxtexts_loop_draws():
  """The loop splits its key through one compiled call; the keys are jax.random.split's, step after step."""
  import jax
  import numpy as np

  from maxtext_like.inference import microbenchmark
  rng_a = rng_b = jax.random.PRNGKey(1234)
  for _ in range(3):
    rng_a, key_a = microbenchmark._split(rng_a)
    rng_b, key_b = jax.random.split(rng_b)
    np.testing.assert_array_equal(np.asarray(key_a), np.asarray(key_b))
    np.testing.assert_array_equal(np.asarray(rng_a), np.asarray(rng_b))
