"""Tokenizer interface: shipped sentencepiece model, HF and tiktoken backends, errors."""

import base64
import gzip
import json
import pickle

import pytest
import tokenizers

from maxtext_like import assets
from maxtext_like.data import build_tokenizer, tokenizer_types

TEXTS = [
    "It is a truth universally acknowledged, that a single man in possession"
    " of a good fortune, must be in want of a wife.",
    "Two  spaces, a tab\there,\nnew lines\n\nand £20,000 — naïve café 日本.",
    "",
]


def test_shipped_sentencepiece_ids_and_vocab(sp_tokenizer):
  assert sp_tokenizer.vocab_size == 4096
  assert (sp_tokenizer.pad_id, sp_tokenizer.bos_id, sp_tokenizer.eos_id) == (0, 1, 2)


@pytest.mark.parametrize("text", TEXTS)
def test_shipped_sentencepiece_round_trip(sp_tokenizer, text):
  ids = sp_tokenizer.encode(text)
  assert ids[0] == sp_tokenizer.bos_id and ids[-1] == sp_tokenizer.eos_id
  assert all(0 <= i < sp_tokenizer.vocab_size for i in ids)
  assert 3 not in ids  # byte fallback: never <unk>
  assert sp_tokenizer.decode(ids) == text


def test_encode_flags_and_overrides():
  tok = build_tokenizer("sentencepiece", assets.tokenizer_path(), add_bos=False, add_eos=False)
  plain = tok.encode("Emma Woodhouse")
  assert tok.bos_id not in plain and tok.eos_id not in plain
  assert tok.encode("Emma Woodhouse", add_bos=True, add_eos=True) == [1] + plain + [2]


def test_shipped_tokenizer_compresses_held_out_prose(sp_tokenizer):
  with gzip.open(assets.corpus_path("eval"), "rt", encoding="utf-8") as f:
    text = json.loads(f.readline())["text"]
  ids = sp_tokenizer.encode(text, add_bos=False, add_eos=False)
  assert len(text) / len(ids) > 3.5  # a trained English BPE, not bytes
  assert sp_tokenizer.decode(ids) == text


def test_tokenizer_pickles_by_path(sp_tokenizer):
  clone = pickle.loads(pickle.dumps(sp_tokenizer))
  assert clone.encode(TEXTS[0]) == sp_tokenizer.encode(TEXTS[0])


def test_missing_path_is_a_clear_error(tmp_path):
  missing = str(tmp_path / "nope.model")
  for kind in tokenizer_types():
    with pytest.raises(FileNotFoundError, match="nope.model"):
      build_tokenizer(kind, missing, add_bos=True, add_eos=True)


def test_unknown_type_suggests_a_name():
  with pytest.raises(ValueError, match="did you mean 'sentencepiece'"):
    build_tokenizer("sentencepeice", assets.tokenizer_path(), add_bos=True, add_eos=True)


def _tiny_hf_tokenizer():
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(TEXTS * 5, trainer)
  return tok


def _check_hf(hf):
  assert (hf.pad_id, hf.bos_id, hf.eos_id) == (0, 1, 2)
  assert hf.vocab_size == 300
  for text in TEXTS:
    ids = hf.encode(text)
    assert ids[0] == 1 and ids[-1] == 2
    assert hf.decode(ids) == text


def test_huggingface_tokenizer_json_file(tmp_path):
  path = tmp_path / "tokenizer.json"
  _tiny_hf_tokenizer().save(str(path))
  _check_hf(build_tokenizer("huggingface", str(path), add_bos=True, add_eos=True))


def test_huggingface_tokenizer_directory(tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top

  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=_tiny_hf_tokenizer(), bos_token="<s>", eos_token="</s>", pad_token="<pad>"
  )
  fast.save_pretrained(str(tmp_path))
  _check_hf(build_tokenizer("huggingface", str(tmp_path), add_bos=True, add_eos=True))


def test_tiktoken_llama3_layout(tmp_path):
  ranks = [bytes([b]) for b in range(256)] + [b"th", b"he", b"the", b" the"]
  path = tmp_path / "tiny.tiktoken"
  path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(ranks)))
  tt = build_tokenizer("tiktoken", str(path), add_bos=True, add_eos=True)
  n = len(ranks)
  assert (tt.bos_id, tt.eos_id, tt.vocab_size) == (n, n + 1, n + 256)
  ids = tt.encode("in the theatre")
  assert ids[0] == n and ids[-1] == n + 1 and n - 1 in ids  # " the" merged
  for text in TEXTS + ["<|end_of_text|> is plain text here"]:
    assert tt.decode(tt.encode(text)) == text
