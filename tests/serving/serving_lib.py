"""What the serving tests share: the tiny model's arguments, a chat template, texts that exercise detokenization,
starting and stopping a server on a free localhost port, and the Hugging Face and tiktoken tokenizers built locally.
Imported by name (a module of its own: `conftest` names clash across test folders)."""

import base64
import os
import subprocess
import sys
import time
import urllib.request

import portpicker

# The training tests' tiny llama with room to generate: 4 slots, prompts up to 64 tokens, rows of 512.
SERVE_TINY = ["base.yml", "override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4",
              "base_num_kv_heads=2", "head_dim=16", "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=4096",
              "dtype=float32", "enable_tensorboard=false", "max_target_length=512", "max_prefill_predict_length=64",
              "per_device_batch_size=4", "run_name=serve", "multi_sampling=true"]

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

TEXTS = ["It is a truth universally acknowledged, that a single man",
         "Two  spaces, a tab\there,\nnew lines\n\nand £20,000 — naïve café 日本 😀."]


class Served:
  def __init__(self, argv, port, proc):
    self.argv, self.port, self.proc = argv, port, proc
    self.url = f"http://127.0.0.1:{port}"

  def client(self):
    import openai
    return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def start_server(argv, log_path, extra_flags=()) -> Served:
  port = portpicker.pick_unused_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  log = open(log_path, "w")  # noqa: SIM115 - closed with the process
  proc = subprocess.Popen([sys.executable, "-m", "maxtext_like.serve", *argv, "--port", str(port), *extra_flags],
                          stdout=log, stderr=subprocess.STDOUT, env=env)
  deadline = time.time() + 180
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"the server exited with {proc.returncode}:\n{open(log_path).read()}")
    try:
      urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
      return Served(argv, port, proc)
    except OSError:
      time.sleep(0.5)
  proc.kill()
  raise RuntimeError(f"the server did not answer /health in time:\n{open(log_path).read()}")


def stop_server(served: Served) -> None:
  served.proc.terminate()
  try:
    served.proc.wait(timeout=20)
  except subprocess.TimeoutExpired:
    served.proc.kill()


def hf_tokenizer_dir(path, chat_template=None):
  """A byte-level BPE trained on TEXTS, saved as a transformers tokenizer directory."""
  import tokenizers
  import transformers
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<|end|>"],
                                           initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(TEXTS * 5, trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                              pad_token="<pad>", additional_special_tokens=["<|end|>"])
  if chat_template is not None:
    fast.chat_template = chat_template
  fast.save_pretrained(str(path))
  return str(path)


def tiktoken_file(path):
  ranks = [bytes([b]) for b in range(256)] + [b"th", b"he", b"the", b" the", b"\xc3\xa9", b" \xe6\x97\xa5"]
  path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(ranks)))
  return str(path)
