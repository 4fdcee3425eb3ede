"""LoRA adapters against Hugging Face PEFT: our exported adapter, loaded by `peft` onto the transformers llama that
our model was converted from, gives our logits; PEFT's format read back gives our adapter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from hf_parity_lib import hf_config, hf_logits, hf_model_from, our_model, redraw_llama, spec_from_hf
from maxtext_like.convert import lora as convert_lora
from maxtext_like.models import lora
from maxtext_like.runtime import lora_adapters

LLAMA = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
             head_dim=16, vocab_size=256, rms_norm_eps=1e-6)


def _random_adapters(model, seed):
  """Non-zero A and B everywhere, so every adapted module changes the output."""
  adapters = nnx.state(model, nnx.LoRAParam)
  leaves, tree = jax.tree.flatten(adapters)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("scan_layers", [False, True])
def test_exported_adapter_loaded_by_peft_matches_our_logits(tmp_path, scan_layers):
  import peft
  from safetensors.numpy import save_file
  hf = hf_model_from("LlamaForCausalLM", **LLAMA)
  redraw_llama(hf)
  spec = spec_from_hf(hf_config(hf), "dtype=float32", "weight_dtype=float32", "matmul_precision=highest")
  lspec = lora.LoraSpec(rank=4, alpha=8.0)
  base = our_model(spec, hf, scan_layers=scan_layers)
  spec = base.spec
  model = lora.apply_lora(base, lspec, spec.decoder_block, jax.random.PRNGKey(0))
  nnx.update(model, _random_adapters(model, 1))
  toks = np.random.RandomState(0).randint(0, LLAMA["vocab_size"], (2, 12))
  run = nnx.jit(lambda m, t: m(t))
  ours = np.asarray(run(model, jnp.asarray(toks)))
  assert np.abs(ours - np.asarray(run(base, jnp.asarray(toks)))).max() > 1e-2  # the adapter matters

  tensors, config = convert_lora.to_peft(spec, lspec, nnx.state(model, nnx.LoRAParam))
  out = tmp_path / "adapter"
  out.mkdir()
  save_file(tensors, str(out / "adapter_model.safetensors"))
  (out / "adapter_config.json").write_text(__import__("json").dumps(config))
  with torch.no_grad():
    theirs = hf_logits(peft.PeftModel.from_pretrained(hf, str(out)).eval(), toks)
  assert len(tensors) == 2 * 7 * LLAMA["num_hidden_layers"]  # q, k, v, o, gate, up, down per layer
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)

  back = lora_adapters.adapters_from_peft(str(out), spec, lspec, nnx.state(model, nnx.LoRAParam))
  for (p, x), (_, y) in zip(nnx.to_flat_state(back), nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))):
    np.testing.assert_array_equal(np.asarray(x[...]), np.asarray(y[...]), err_msg=str(p))

  wrong = lora.LoraSpec(rank=4, alpha=8.0, module_path=r"decoder/.*layers.*/self_attention/(query|value)")
  with pytest.raises(lora.LoraError, match="not adapted by this model"):
    lora_adapters.adapters_from_peft(str(out), spec, wrong, lora.abstract_adapters(spec, wrong))
