"""A `to_maxtext` output is directly usable: it trains (load_parameters_path, synthetic data) and decodes
(`generate_ids`, and `api.generate` with an HF tokenizer dir); `to_hf` copies that tokenizer's files."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import transformers

import parity_cases as pc
from hf_parity_lib import hf_greedy, load_converted, our_greedy, tokens
from maxtext_like.api import generate, load_config
from maxtext_like.convert import to_hf, to_maxtext
from maxtext_like.training.loop import Trainer


def _tokenizer_dir(path) -> str:
  """A tiny byte-level BPE tokenizer.json (+ config) that `transformers.AutoTokenizer` loads offline."""
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
  tok.train_from_iterator(["hello world, the cat sat on the mat"] * 20, trainer)
  assert tok.get_vocab_size() <= 256  # the tiny model's vocab
  os.makedirs(path)
  tok.save(os.path.join(path, "tokenizer.json"))
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
               "pad_token": "<pad>", "unk_token": "<unk>"}, f)
  return str(path)


def test_converted_checkpoint_trains_and_decodes(tmp_path):
  hf = pc.hf_model("llama2", "llama2_gqa3")
  hf.save_pretrained(tmp_path / "hf")
  out = to_maxtext(str(tmp_path / "hf"), str(tmp_path / "ours"))  # scan_layers=true (default)

  # decodes directly: greedy continuation equals transformers'
  prompts = tokens(2, 6, seed=1, vocab=256)
  assert our_greedy(load_converted(out).model, prompts, 8) == hf_greedy(hf, prompts, 8)

  # trains from it: parameters start from the converted ones (a fresh init would be O(1) away)
  cfg = load_config(["base.yml", f"model_name={out}/model.yml", f"load_parameters_path={out}", "dataset_type=synthetic",
                     "steps=2", "per_device_batch_size=1", "max_target_length=32", "max_prefill_predict_length=16", "enable_checkpointing=false",
                     f"base_output_directory={tmp_path / 'runs'}", "run_name=t", "enable_tensorboard=false",
                     "ici_fsdp_parallelism=1", "log_period=1000"], env={})
  result = Trainer(cfg, devices=jax.devices()[:1]).run()
  assert sorted(result.losses) == [0, 1] and all(np.isfinite(v) for v in result.losses.values())
  (embedding,) = [np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(result.final_state["params"])[0]
                  if "token_embedder" in jax.tree_util.keystr(p)]
  start = hf.model.embed_tokens.weight.detach().numpy()
  assert 0 < np.abs(embedding - start).max() < 0.05, np.abs(embedding - start).max()

  # decodes through the text API with a Hugging Face tokenizer directory
  tok_dir = _tokenizer_dir(tmp_path / "tok")
  gen_cfg = load_config(["base.yml", f"model_name={out}/model.yml", f"load_parameters_path={out}",
                         "tokenizer_type=huggingface", f"tokenizer_path={tok_dir}", "max_prefill_predict_length=16",
                         "max_target_length=24", "decode_sampling_strategy=greedy"], env={})
  texts = generate(gen_cfg, ["hello world"])
  assert len(texts) == 1 and isinstance(texts[0], str)

  # to_hf copies the tokenizer files next to the weights; transformers loads both
  back = to_hf(str(tmp_path / "back"), ["base.yml", f"model_name={out}/model.yml", f"load_parameters_path={out}",
                                        f"tokenizer_path={tok_dir}", "tokenizer_type=huggingface"])
  assert {"tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(back))
  assert transformers.AutoTokenizer.from_pretrained(back)("hello world")["input_ids"] == \
      transformers.AutoTokenizer.from_pretrained(tok_dir)("hello world")["input_ids"]
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(back, attn_implementation="eager").float().eval()
  assert hf_greedy(reloaded, prompts, 8) == hf_greedy(hf, prompts, 8)
