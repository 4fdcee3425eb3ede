"""SFT and DPO records: formats, completion-only masks, chat templates (ours and a Hugging Face tokenizer's), packing
with masks, and bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from maxtext_like import assets
from maxtext_like.config import load_config
from maxtext_like.data.conversations import Formatter, JsonRows
from maxtext_like.data.errors import DataError
from maxtext_like.data.tokenizers import build_tokenizer
from maxtext_like.training.data_source import make_iterator

PLAIN = assets.chat_path("plain.jinja")
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 plus 3?"},
        {"role": "assistant", "content": "2 plus 3 is 5."}, {"role": "user", "content": "And 4 plus 4?"},
        {"role": "assistant", "content": "calculator(4 + 4)"}, {"role": "tool", "content": "8"},
        {"role": "assistant", "content": "4 plus 4 is 8."}]


@pytest.fixture(scope="module")
def sp():
  return build_tokenizer("sentencepiece", assets.tokenizer_path(), True, True)


def plain(tok, columns, completion_only=True, template=True):
  return Formatter(tok, tuple(columns), open(PLAIN).read() if template else None, PLAIN if template else "none",
                   completion_only)


def assistant_runs(tok, enc) -> list[str]:
  """Each contiguous masked-in run of tokens, decoded (eos kept as '<eos>')."""
  runs, cur = [], None
  for t, m in zip(enc.ids.tolist(), enc.mask.tolist()):
    if m:
      cur = (cur or []) + [t]
    elif cur is not None:
      runs.append(cur)
      cur = None
  if cur is not None:
    runs.append(cur)
  return [tok.decode([t for t in r if t != tok.eos_id]).strip() + ("<eos>" if r[-1] == tok.eos_id else "") for r in runs]


def test_multi_turn_masks_every_assistant_turn_with_system_and_tool(sp):
  enc = plain(sp, ["messages"]).sft({"messages": CONV}, "row 0")
  # every assistant turn is trained, each with its end of turn (the newline and eos the template writes)
  assert assistant_runs(sp, enc) == ["2 plus 3 is 5.<eos>", "calculator(4 + 4)<eos>", "4 plus 4 is 8.<eos>"]
  # the ids are those of tokenizing the whole rendered conversation, as decode/serving would
  full = plain(sp, ["messages"], completion_only=False).sft({"messages": CONV}, "row 0")
  np.testing.assert_array_equal(enc.ids, full.ids)
  assert full.mask.all()
  assert enc.ids[0] == sp.bos_id and enc.ids[-1] == sp.eos_id


@pytest.mark.parametrize("columns,record,prompt_part,answer", [
    (["prompt", "completion"], {"prompt": "What is 1 plus 1?", "completion": "1 plus 1 is 2."}, "What is 1 plus 1?", "1 plus 1 is 2."),
    (["question", "answer"], {"question": "Who wrote Emma?", "answer": "Jane Austen."}, "Who wrote Emma?", "Jane Austen."),
    (["instruction", "input", "output"], {"instruction": "Add the numbers.", "input": "2 and 5", "output": "7"},
     "Add the numbers.\n\n2 and 5", "7"),
    (["instruction", "input", "output"], {"instruction": "Say hello.", "input": "", "output": "Hello."}, "Say hello.", "Hello."),
    (["prompt", "completion"], {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi."}],
                                "completion": "Hello!"}, "Hi.", "Hello!"),
])
def test_each_format_with_the_template(sp, columns, record, prompt_part, answer):
  fmt = plain(sp, columns)
  enc = fmt.sft(record, "row 0")
  assert assistant_runs(sp, enc) == [answer + "<eos>"]
  text = sp.decode(enc.ids.tolist())
  assert f"User: {prompt_part}\nAssistant: {answer}\n" in text


@pytest.mark.parametrize("columns,record,completion", [
    (["prompt", "completion"], {"prompt": "The capital of France is", "completion": " Paris."}, "Paris."),
    (["instruction", "input", "output"], {"instruction": "Count:", "input": "one two", "output": " three"}, "three"),
])
def test_text_formats_without_a_template(sp, columns, record, completion):
  enc = plain(sp, columns, template=False).sft(record, "row 0")
  assert enc.ids[0] == sp.bos_id and enc.ids[-1] == sp.eos_id
  assert assistant_runs(sp, enc) == [completion + "<eos>"]
  everything = plain(sp, columns, completion_only=False, template=False).sft(record, "row 0")
  np.testing.assert_array_equal(everything.ids, enc.ids)
  assert everything.mask.all()


def test_dpo_pairs_mask_the_shared_prompt(sp):
  fmt = plain(sp, ["prompt", "chosen", "rejected"])
  chosen, rejected = fmt.dpo({"prompt": "What is 2 plus 2?", "chosen": "2 plus 2 is 4.", "rejected": "2 plus 2 is 5."}, "r")
  assert assistant_runs(sp, chosen) == ["2 plus 2 is 4.<eos>"] and assistant_runs(sp, rejected) == ["2 plus 2 is 5.<eos>"]
  # implicit prompt: chosen/rejected conversations sharing their start
  conv = lambda a: [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": a}]
  c, r = plain(sp, ["chosen", "rejected"]).dpo({"chosen": conv("Hello."), "rejected": conv("Go away.")}, "r")
  assert assistant_runs(sp, c) == ["Hello.<eos>"] and assistant_runs(sp, r) == ["Go away.<eos>"]
  # text without a template: the common start (to a word boundary) is the prompt
  c, r = plain(sp, ["chosen", "rejected"], template=False).dpo({"chosen": "The sky is blue.", "rejected": "The sky is green."}, "r")
  assert assistant_runs(sp, c) == ["blue.<eos>"] and assistant_runs(sp, r) == ["green.<eos>"]


# ---- a Hugging Face tokenizer directory with its own template, against transformers ----
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  from tokenizers import ByteLevelBPETokenizer
  from transformers import PreTrainedTokenizerFast
  d = tmp_path_factory.mktemp("hf_tok")
  bpe = ByteLevelBPETokenizer()
  text = [json.dumps(r) for r in open(assets.chat_path("sft_train.jsonl"))]
  bpe.train_from_iterator(text, vocab_size=400, min_frequency=1, special_tokens=["<s>", "</s>", "<|im_start|>", "<|im_end|>"])
  tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",  # pylint: disable=protected-access
                                additional_special_tokens=["<|im_start|>", "<|im_end|>"])
  tok.chat_template = CHATML
  tok.save_pretrained(str(d))
  return str(d)


def test_hf_tokenizer_template_renders_as_transformers(hf_dir, tmp_path):
  from transformers import AutoTokenizer
  from maxtext_like.data.conversations import formatter_for
  hf = AutoTokenizer.from_pretrained(hf_dir)
  cfg = load_config(["base.yml", "use_sft=true", "use_chat_template=true", "tokenizer_type=huggingface",
                     f"tokenizer_path={hf_dir}", "dataset_type=hf", "hf_path=json", f"base_output_directory={tmp_path}",
                     "train_data_columns=[messages]", "sft_train_on_completion_only=true"], env={})
  fmt = formatter_for(cfg, ["messages"])
  assert fmt.template_source.endswith(("tokenizer_config.json", "chat_template.jinja"))
  for msgs in (CONV, CONV[:3], CONV[1:3]):
    assert fmt._render(msgs, False, "r") == hf.apply_chat_template(msgs, tokenize=False)  # pylint: disable=protected-access
    assert fmt._render(msgs[:-1], True, "r") == hf.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)  # pylint: disable=protected-access
    enc = fmt.sft({"messages": msgs}, "r")
    want = hf.apply_chat_template(msgs, tokenize=True)
    want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
    assert enc.ids.tolist() == list(want)
    # each assistant turn is trained through its <|im_end|>; nothing else is
    runs = []
    ids, mask = enc.ids.tolist(), enc.mask.tolist()
    k = 0
    while k < len(ids):
      if mask[k]:
        j = k
        while j < len(ids) and mask[j]:
          j += 1
        runs.append(hf.decode(ids[k:j]))
        k = j
      k += 1
    assert runs == [m["content"] + "<|im_end|>\n" for m in msgs if m["role"] == "assistant"]


# ---- the pipeline: packing keeps masks and conversations apart ----
def sft_cfg(tmp_path, *argv):
  return load_config(["base.yml", "use_sft=true", "sft_train_on_completion_only=true", "use_chat_template=true",
                      f"chat_template_path={PLAIN}", "max_target_length=128", "num_epoch=1", "enable_data_shuffling=false",
                      f"base_output_directory={tmp_path}", "run_name=t", *argv], env={})


def epoch(cfg, rows=4):
  return list(make_iterator(cfg, rows, "eval"))


@pytest.mark.parametrize("packing", ["packing=false", "grain_packing_type=first_fit", "grain_packing_type=best_fit",
                                     "grain_packing_type=concat_then_split"])
def test_packing_keeps_the_trained_tokens_and_segments(tmp_path, packing, sp):
  rows = JsonRows([assets.chat_path("sft_eval.jsonl")], ["messages"])
  fmt = plain(sp, ["messages"])
  encs = [fmt.sft(rows[i], "") for i in range(len(rows))]
  want = sorted(int(t) for e in encs for t, m in zip(e.ids[1:], e.mask[1:]) if m)
  batches = epoch(sft_cfg(tmp_path, packing), rows=1)
  got = sorted(int(t) for b in batches for t in b["targets"][b["targets_segmentation"] != 0])
  if packing == "grain_packing_type=concat_then_split":  # the last partial row is dropped
    assert len(got) <= len(want) and len(got) > 0.8 * len(want)
    return
  assert got == want
  for b in batches:
    seg, pos = b["inputs_segmentation"][0], b["inputs_position"][0]
    starts = np.flatnonzero(np.diff(np.concatenate([[0], seg])) != 0)
    assert all(pos[s] == 0 for s in starts if seg[s] > 0)  # every conversation restarts its positions (own segment)
    assert set(np.unique(b["targets_segmentation"])) - {0} <= set(np.unique(seg))


# ---- bad input: clear errors naming the file and row ----
def test_bad_records_name_file_and_row(tmp_path, sp):
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps({"messages": CONV}) + "\n" + json.dumps({"text": "x"}) + "\n")
  with pytest.raises(DataError, match=r"bad.jsonl:2: no field\(s\) \['messages'\]"):
    JsonRows([str(path)], ["messages"])
  no_reply = {"messages": [{"role": "user", "content": "Hi"}]}
  with pytest.raises(DataError, match="row 7: the conversation has no assistant turn"):
    plain(sp, ["messages"]).sft(no_reply, "row 7")
  strict = Formatter(sp, ("messages",), CHATML.replace("{% for m in messages %}",
                     "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tool role') }}{% endif %}"),
                     "strict.jinja", True)
  with pytest.raises(DataError, match="row 3: the chat template \\(strict.jinja\\) does not render.*no tool role"):
    strict.sft({"messages": CONV}, "row 3")
  with pytest.raises(DataError, match="row 1: this record holds messages, which need a chat template"):
    plain(sp, ["messages"], template=False).sft({"messages": CONV}, "row 1")
  with pytest.raises(DataError, match="row 2: column 'messages' message 0"):
    plain(sp, ["messages"]).sft({"messages": [{"role": "narrator", "content": "x"}]}, "row 2")


def _cli(*argv):
  return subprocess.run([sys.executable, "-m", "maxtext_like.data_inspect", "base.yml", *argv, "--batches", "1", "--rows", "1"],
                        capture_output=True, text=True, timeout=300)


def test_cli_bad_input_exit_2(tmp_path):
  data = tmp_path / "d.jsonl"
  data.write_text(json.dumps({"question": "q", "reply": "a"}) + "\n")
  r = _cli("use_sft=true", "dataset_type=hf", "hf_path=json", f"hf_train_files={data}", "train_data_columns=[question,answer]",
           f"base_output_directory={tmp_path}")
  assert r.returncode == 2, r.stderr[-2000:]
  assert "no column(s) ['answer']" in r.stderr and "Traceback" not in r.stderr
  r = _cli("use_dpo=true", f"base_output_directory={tmp_path}")
  assert r.returncode == 2 and "packing" in r.stderr and "must be false with use_dpo" in r.stderr, r.stderr[-2000:]
  r = _cli("use_sft=true", "use_chat_template=true", "chat_template={% for m in messages %}{{ m.nope.deeper }}{% endfor %}",
           f"base_output_directory={tmp_path}")
  assert r.returncode == 2 and "does not render" in r.stderr and "sft_train.jsonl:1" in r.stderr, r.stderr[-2000:]
