"""Tokens/s each data pipeline delivers to the train step (one process, CPU), printed as a table.

Writes the embedded training corpus, split into paragraphs (~9k documents,
~1M tokens), into every supported format in a temporary directory, then for
each pipeline times `make_iterator` + the first batch (startup) and the
following batches (steady state). Tokens/s counts real (non-padding) target
tokens. Usage:

    .venv/bin/python benchmarks/data_throughput.py [--batches 60] [--rows 8] [--seq 256] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

_TFDS_BUILDER = '''
import json, os
import tensorflow_datasets as tfds

class BenchText(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))
  def _split_generators(self, dl_manager):
    return {"train": self._gen()}
  def _generate_examples(self):
    raise NotImplementedError
  def _gen(self):
    with open(os.environ["BENCH_TFDS_SOURCE"]) as f:
      for i, line in enumerate(f):
        yield i, {"text": json.loads(line)["text"]}
'''


def write_formats(d: str) -> dict[str, list[str]]:
  """The corpus in every format; returns {pipeline name: config overrides}."""
  import datasets
  import pyarrow as pa
  import pyarrow.parquet as pq
  from array_record.python.array_record_module import ArrayRecordWriter
  from tensorflow_datasets.proto import tf_example_pb2

  from maxtext_like import assets
  from maxtext_like.data.documents import read_documents

  paragraphs = [p for doc in read_documents([assets.corpus_path("train")]) for p in doc.split("\n") if p.strip()]
  jsonl = os.path.join(d, "corpus.jsonl")
  with open(jsonl, "w") as f:
    f.writelines(json.dumps({"text": p}) + "\n" for p in paragraphs)
  pq.write_table(pa.table({"text": paragraphs}), os.path.join(d, "corpus.parquet"), row_group_size=1000)
  w = ArrayRecordWriter(os.path.join(d, "corpus.arecord"), "group_size:1")
  for p in paragraphs:
    ex = tf_example_pb2.Example()
    ex.features.feature["text"].bytes_list.value.append(p.encode())
    w.write(ex.SerializeToString())
  w.close()
  datasets.config.HF_DATASETS_CACHE = os.path.join(d, "hf_cache")
  os.makedirs(os.path.join(d, "benchpkg"))
  with open(os.path.join(d, "benchpkg", "__init__.py"), "w") as f:
    f.write(_TFDS_BUILDER)
  sys.path.insert(0, d)
  os.environ["BENCH_TFDS_SOURCE"] = jsonl
  import benchpkg  # pylint: disable=import-error
  benchpkg.BenchText(data_dir=os.path.join(d, "tfds"), file_format="array_record").download_and_prepare()
  print(f"corpus: {len(paragraphs)} documents, {sum(map(len, paragraphs)) / 1e6:.2f}M characters", flush=True)
  return {
      "synthetic": ["dataset_type=synthetic"],
      "embedded (jsonl.gz, in memory)": ["dataset_type=embedded"],
      "hf json": ["dataset_type=hf", "hf_path=json", f"hf_train_files={jsonl}"],
      "hf parquet": ["dataset_type=hf", "hf_path=parquet", f"hf_train_files={d}/corpus.parquet"],
      "grain arrayrecord": ["dataset_type=grain", f"grain_train_files={d}/corpus.arecord"],
      "grain parquet": ["dataset_type=grain", "grain_file_type=parquet", f"grain_train_files={d}/corpus.parquet"],
      "tfds (array_record)": ["dataset_type=tfds", f"dataset_path={d}/tfds", "dataset_name=bench_text"],
  }


def measure(args: list[str], rows: int, batches: int) -> dict:
  from maxtext_like.config import load_config
  from maxtext_like.data import packing_efficiency
  from maxtext_like.training.data_source import make_iterator

  cfg = load_config(args, env={})
  t0 = time.perf_counter()
  it = make_iterator(cfg, rows, "train")
  next(it)
  t1 = time.perf_counter()
  real, eff = 0, []
  for _ in range(batches):
    b = next(it)
    real += int((b["targets_segmentation"] != 0).sum())
    eff.append(packing_efficiency(b))
  t2 = time.perf_counter()
  del it
  return dict(startup=t1 - t0, tokens_per_s=real / (t2 - t1), efficiency=float(np.mean(eff)), batches_per_s=batches / (t2 - t1))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batches", type=int, default=60)
  p.add_argument("--rows", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--repeat", type=int, default=2, help="runs per row; the best is reported")
  a = p.parse_args()
  common = ["base.yml", f"max_target_length={a.seq}", "max_prefill_predict_length=16", "num_epoch=-1",
            "grain_worker_count=0", "grain_num_threads=2", "grain_prefetch_buffer_size=64", "vocab_size=32000",
            "override_model_config=true"]
  with tempfile.TemporaryDirectory() as d:
    pipelines = write_formats(d)
    runs = [(name, extra) for name, extra in pipelines.items()]
    runs += [(f"grain parquet, {t}", pipelines["grain parquet"] + [f"grain_packing_type={t}"]) for t in ("best_fit", "concat_then_split")]
    runs += [("grain parquet, packing=false", pipelines["grain parquet"] + ["packing=false"])]
    runs += [("grain parquet, use_truncation=false", pipelines["grain parquet"] + ["use_truncation=false"])]
    runs += [("grain arrayrecord, 1 worker process", pipelines["grain arrayrecord"] + ["grain_worker_count=1"])]
    print(f"\n{a.rows} rows x {a.seq} tokens per batch, {a.batches} timed batches, best of {a.repeat}; "
          f"first_fit packing and use_truncation=true unless noted\n")
    print(f"| pipeline | startup s | tokens/s | batches/s | packing efficiency |\n|---|---:|---:|---:|---:|")
    for name, extra in runs:
      best = max((measure(common + extra, a.rows, a.batches) for _ in range(a.repeat)), key=lambda r: r["tokens_per_s"])
      print(f"| {name} | {best['startup']:.2f} | {best['tokens_per_s']:,.0f} | {best['batches_per_s']:.1f} | "
            f"{best['efficiency']:.3f} |", flush=True)


if __name__ == "__main__":
  main()
