"""Text iterator: per-process shards, exact resume, deterministic shuffle, inputs and errors."""

import gzip
import itertools
import json

import numpy as np
import pytest

from maxtext_like import assets
from maxtext_like.data import make_text_iterator, packing_efficiency
from maxtext_like.data.errors import DataError

from batch_checks import segments


def _iterator(files, tok, **overrides):
  kwargs = dict(
      files=files, tokenizer=tok, seq_len=16, global_batch_size=4, shuffle=True,
      seed=11, packing=True, packing_type="first_fit", num_epoch=-1,
  )
  kwargs.update(overrides)
  return make_text_iterator(**kwargs)


def _docs_seen(it, tok):
  return [tok.decode(seq) for batch in it for seq in segments(batch)]


def test_process_shards_are_disjoint_and_cover_the_data(tiny_corpus, sp_tokenizer):
  path, docs = tiny_corpus
  seen = []
  for process_index in range(2):
    it = _iterator([path], sp_tokenizer, seq_len=128, packing=False, num_epoch=1,
                   process_index=process_index, process_count=2)
    batches = list(it)
    assert len(batches) == 6 and all(b["inputs"].shape == (2, 128) for b in batches)
    seen.append(_docs_seen(batches, sp_tokenizer))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(docs)


@pytest.mark.parametrize("packing,packing_type", [
    (False, "first_fit"), (True, "first_fit"), (True, "concat_then_split")])
@pytest.mark.parametrize("before", [5, 30])  # 30 batches cross an epoch boundary
def test_resume_gives_exactly_the_next_batches(tiny_corpus, sp_tokenizer, packing, packing_type, before):
  path, _ = tiny_corpus
  make = lambda: _iterator([path], sp_tokenizer, packing=packing, packing_type=packing_type)
  it = make()
  for _ in range(before):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # must survive JSON
  expected = [next(it) for _ in range(3)]
  resumed = make()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_resume_into_a_different_pipeline_is_refused(tiny_corpus, sp_tokenizer):
  path, _ = tiny_corpus
  state = _iterator([path], sp_tokenizer).get_state()
  with pytest.raises(ValueError, match="seed: checkpoint 11 != now 12"):
    _iterator([path], sp_tokenizer, seed=12).set_state(state)


def test_shuffle_is_deterministic_per_seed(tiny_corpus, sp_tokenizer):
  path, docs = tiny_corpus
  first = lambda **kw: next(_iterator([path], sp_tokenizer, **kw))["inputs"]
  for packing in (False, True):  # document order alone, then with packed bins
    np.testing.assert_array_equal(first(seed=1, packing=packing), first(seed=1, packing=packing))
    assert not np.array_equal(first(seed=1, packing=packing), first(seed=2, packing=packing))
  in_order = _iterator([path], sp_tokenizer, shuffle=False, packing=False, seq_len=128)
  assert _docs_seen([next(in_order)], sp_tokenizer) == docs[:4]


def test_each_epoch_is_a_new_permutation(tiny_corpus, sp_tokenizer):
  path, docs = tiny_corpus
  seen = _docs_seen(_iterator([path], sp_tokenizer, packing=False, seq_len=128, num_epoch=2),
                    sp_tokenizer)
  epoch1, epoch2 = seen[:24], seen[24:]
  assert sorted(epoch1) == sorted(epoch2) == sorted(docs)
  assert epoch1 != epoch2 and epoch1 != docs


def test_txt_and_gzip_inputs_match_jsonl(tmp_path, tiny_corpus, sp_tokenizer):
  path, docs = tiny_corpus
  (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n\n")
  with gzip.open(tmp_path / "docs.jsonl.gz", "wt") as f:
    f.write("".join(json.dumps({"body": d}) + "\n" for d in docs))
  want = _docs_seen(_iterator([path], sp_tokenizer, num_epoch=1), sp_tokenizer)
  assert _docs_seen(_iterator([str(tmp_path / "*.txt")], sp_tokenizer, num_epoch=1), sp_tokenizer) == want
  gz = _iterator([str(tmp_path / "docs.jsonl.gz")], sp_tokenizer, num_epoch=1, data_column="body")
  assert _docs_seen(gz, sp_tokenizer) == want
  with pytest.raises(DataError, match="no field 'text'"):
    _iterator([str(tmp_path / "docs.jsonl.gz")], sp_tokenizer)


def test_missing_file_is_a_clear_error(tmp_path, sp_tokenizer):
  missing = str(tmp_path / "missing.jsonl")
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    _iterator([missing], sp_tokenizer)


def test_invalid_arguments_are_reported(tiny_corpus, sp_tokenizer):
  path, _ = tiny_corpus
  with pytest.raises(ValueError, match="multiple of process_count"):
    _iterator([path], sp_tokenizer, global_batch_size=3, process_count=2)
  with pytest.raises(ValueError, match="packing_type"):
    _iterator([path], sp_tokenizer, packing_type="next_fit")


def test_embedded_eval_corpus_end_to_end(sp_tokenizer):
  it = _iterator([assets.corpus_path("eval")], sp_tokenizer, seq_len=128, global_batch_size=8)
  batches = list(itertools.islice(it, 4))
  assert all(list(segments(b)) for b in batches)
  assert min(map(packing_efficiency, batches)) > 0.9
  text = sp_tokenizer.decode(batches[0]["inputs"][0])
  assert text.count(" the ") > 0 and "\ufffd" not in text
