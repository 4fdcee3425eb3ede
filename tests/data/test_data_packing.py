"""Packing correctness: segments, positions, shifted targets, no cross-document segments."""

import itertools

import pytest

from maxtext_like.data import make_text_iterator, packing_efficiency

from batch_checks import is_window, segments

MODES = [(False, "first_fit"), (True, "first_fit"), (True, "concat_then_split")]


def _iterator(corpus, tok, *, packing, packing_type, seq_len, num_epoch=-1, batch=4):
  return make_text_iterator(
      files=[corpus], tokenizer=tok, seq_len=seq_len, global_batch_size=batch,
      shuffle=True, seed=7, packing=packing, packing_type=packing_type,
      num_epoch=num_epoch,
  )


@pytest.mark.parametrize("packing,packing_type", MODES)
@pytest.mark.parametrize("seq_len", [16, 96])
def test_segments_are_windows_of_one_document(tiny_corpus, sp_tokenizer, packing, packing_type, seq_len):
  path, docs = tiny_corpus
  doc_ids = [sp_tokenizer.encode(d) for d in docs]
  it = _iterator(path, sp_tokenizer, packing=packing, packing_type=packing_type, seq_len=seq_len)
  found = [seq for batch in itertools.islice(it, 10) for seq in segments(batch)]
  assert found
  for seq in found:
    assert is_window(seq, doc_ids), f"segment crosses documents: {sp_tokenizer.decode(seq)!r}"
  if packing_type == "first_fit" and seq_len == 96:  # longer than any doc: whole documents
    assert all(seq in set(map(tuple, doc_ids)) for seq in found)


def test_packing_puts_several_documents_per_row_and_reduces_padding(tiny_corpus, sp_tokenizer):
  path, _ = tiny_corpus
  def efficiency(packing, packing_type):
    it = _iterator(path, sp_tokenizer, packing=packing, packing_type=packing_type, seq_len=96)
    batches = list(itertools.islice(it, 6))
    return batches, sum(map(packing_efficiency, batches)) / len(batches)

  unpacked_batches, unpacked = efficiency(False, "first_fit")
  packed_batches, first_fit = efficiency(True, "first_fit")
  cts_batches, cts = efficiency(True, "concat_then_split")
  assert max(b["inputs_segmentation"].max() for b in unpacked_batches) == 1
  assert max(b["inputs_segmentation"].max() for b in packed_batches) > 1
  assert unpacked < 0.6 < first_fit
  assert cts == 1.0


def test_one_epoch_unpacked_yields_every_document_once(tiny_corpus, sp_tokenizer):
  path, docs = tiny_corpus
  it = _iterator(path, sp_tokenizer, packing=False, packing_type="first_fit", seq_len=128, num_epoch=1)
  texts = [sp_tokenizer.decode(seq) for batch in it for seq in segments(batch)]
  assert sorted(texts) == sorted(docs)


def test_bos_eos_flags_reach_the_batches(tiny_corpus, sp_tokenizer):
  path, docs = tiny_corpus
  it = make_text_iterator(
      files=[path], tokenizer=sp_tokenizer, seq_len=128, global_batch_size=2,
      shuffle=False, seed=0, packing=False, num_epoch=1, add_bos=False, add_eos=False,
  )
  seq = next(segments(next(it)))
  assert seq == tuple(sp_tokenizer.encode(docs[0], add_bos=False, add_eos=False))
