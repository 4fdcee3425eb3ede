"""Text handling without a server: incremental detokenization joins to the full decode for all three tokenizer
kinds, stop strings cut and hold back the right text, chat templates render and encode special tokens as ids."""

import random

import pytest

from serving_lib import CHAT_TEMPLATE, TEXTS, hf_tokenizer_dir, tiktoken_file
from maxtext_like import assets
from maxtext_like.config import load_config
from maxtext_like.data import build_tokenizer
from maxtext_like.serving.chat import ChatFormatter, find_template
from maxtext_like.serving.detokenize import Detokenizer, StopMatcher


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
  d = tmp_path_factory.mktemp("tok")
  return {"sentencepiece": build_tokenizer("sentencepiece", assets.tokenizer_path(), False, False),
          "huggingface": build_tokenizer("huggingface", hf_tokenizer_dir(d / "hf"), False, False),
          "tiktoken": build_tokenizer("tiktoken", tiktoken_file(d / "t.tiktoken"), False, False)}


def _streamed(tok, ids):
  d = Detokenizer(tok)
  pieces = [d.add(i) for i in ids] + [d.finish()]
  return pieces


@pytest.mark.parametrize("kind", ["sentencepiece", "huggingface", "tiktoken"])
def test_pieces_join_to_the_full_decode(tokenizers, kind):
  tok = tokenizers[kind]
  rng = random.Random(0)
  cases = [tok.encode(t) for t in TEXTS]
  cases += [[rng.randrange(tok.vocab_size) for _ in range(60)] for _ in range(20)]  # byte tokens cut mid-character
  for ids in cases:
    pieces = _streamed(tok, ids)
    assert "".join(pieces) == tok.decode(ids)
  # real text streams as it is written: no replacement characters on the way, spaces kept
  pieces = _streamed(tok, tok.encode(TEXTS[1]))
  assert not any("\ufffd" in p for p in pieces) and "".join(pieces) == TEXTS[1]
  assert sum(bool(p) for p in pieces) > 10  # incremental, not one piece at the end


def test_stop_strings_cut_and_hold_back():
  m = StopMatcher(["STOP", "\n\n"])
  assert m.push("abc S") == ("abc ", False)  # "S" may start STOP: held
  assert m.push("T") == ("", False)
  assert m.push("x") == ("STx", False)  # it did not: released
  assert m.push("yy\n") == ("yy", False)
  assert m.push("\nzz") == ("", True)
  assert m.sent == "abc STxyy" and m.push("more") == ("", True)
  m = StopMatcher(["STOP"])
  m.push("ab ST")
  assert m.flush() == "ST" and m.sent == "ab ST"  # the sequence ended: the held tail is text


def test_chat_template_from_config_encodes_bos_as_an_id(tmp_path):
  (tmp_path / "t.json").write_text('{"chat_template": %s}' % __import__("json").dumps(CHAT_TEMPLATE))
  cfg = load_config(["base.yml", f"chat_template_path={tmp_path / 't.json'}"], env={})
  template, source = find_template(cfg, assets.tokenizer_path())
  tok = build_tokenizer("sentencepiece", assets.tokenizer_path(), True, False)
  chat = ChatFormatter(template, source, tok)
  msgs = [{"role": "user", "content": "Hello"}]
  assert chat.render(msgs) == "<s><|user|>\nHello\n<|assistant|>\n"
  ids = chat.encode(msgs)
  assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
  assert tok.decode(ids) == "<|user|>\nHello\n<|assistant|>\n"


def test_hugging_face_directory_template_and_tiktoken_specials(tmp_path):
  import transformers
  path = hf_tokenizer_dir(tmp_path / "hf", chat_template=CHAT_TEMPLATE.replace("\n{% endfor %}", "<|end|>{% endfor %}"))
  cfg = load_config(["base.yml", "tokenizer_type=huggingface", f"tokenizer_path={path}"], env={})
  template, source = find_template(cfg, path)
  assert source.endswith(("tokenizer_config.json", "chat_template.jinja"))
  msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "naïve café"}]
  hf = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
  ours = ChatFormatter(template, source, build_tokenizer("huggingface", path, True, False))
  assert ours.encode(msgs) == hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False)
  tt = build_tokenizer("tiktoken", tiktoken_file(tmp_path / "t.tiktoken"), True, False)
  llama3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
            "{{ m['content'] }}<|eot_id|>{% endfor %}")
  ids = ChatFormatter(llama3, "test", tt).encode(msgs[1:])
  specials = tt._enc._special_tokens
  assert ids[:2] == [tt.bos_id, specials["<|start_header_id|>"]] and ids[-1] == specials["<|eot_id|>"]
