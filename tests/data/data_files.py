"""Writers of tiny data files in every supported format, and config helpers for the source tests."""

import json

import numpy as np

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def make_doc(i: int) -> str:
  """A unique document; lengths vary from a few to ~100 tokens."""
  n = 1 + (i * 7) % 23
  return f"Document {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n)) + "."


# Small everything: short rows, in-process loading (no worker processes), few threads.
BASE = ["base.yml", "max_target_length=32", "max_prefill_predict_length=16", "vocab_size=4096", "grain_worker_count=0",
        "grain_worker_count_eval=0", "grain_num_threads=2", "grain_num_threads_eval=2", "grain_prefetch_buffer_size=16",
        "grain_prefetch_buffer_size_eval=16"]


def config(*overrides):
  from maxtext_like.config import load_config
  return load_config(BASE + list(overrides), env={})


def docs(n, offset=0, tag=""):
  return [tag + make_doc(i + offset) for i in range(n)]


def write_jsonl(path, texts, column="text"):
  with open(path, "w") as f:
    f.writelines(json.dumps({column: t, "n": i}) + "\n" for i, t in enumerate(texts))
  return str(path)


def write_parquet(path, texts, column="text", row_group_size=5):
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({column: texts, "n": list(range(len(texts)))}), str(path), row_group_size=row_group_size)
  return str(path)


def example_bytes(**feats):
  from tensorflow_datasets.proto import tf_example_pb2
  ex = tf_example_pb2.Example()
  for k, v in feats.items():
    if isinstance(v, (str, bytes)):
      ex.features.feature[k].bytes_list.value.append(v.encode() if isinstance(v, str) else v)
    else:
      ex.features.feature[k].int64_list.value.extend(int(x) for x in v)
  return ex.SerializeToString()


def write_arrayrecord(path, raw_records):
  from array_record.python.array_record_module import ArrayRecordWriter
  w = ArrayRecordWriter(str(path), "group_size:1")
  for r in raw_records:
    w.write(r)
  w.close()
  return str(path)


def write_examples(path, texts, column="text"):
  return write_arrayrecord(path, [example_bytes(**{column: t}) for t in texts])


def all_batches(it, limit=1000):
  out = []
  for b in it:
    out.append(b)
    if len(out) >= limit:
      break
  return out


def texts_of(batches, tok):
  """Decoded text of every segment (one document per segment when packing is off)."""
  out = []
  for b in batches:
    for r in range(b["inputs"].shape[0]):
      seg = b["inputs_segmentation"][r]
      for s in np.unique(seg[seg > 0]):
        idx = seg == s
        ids = list(b["inputs"][r][idx]) + [b["targets"][r][idx][-1]]
        out.append(tok.decode(ids))
  return out
