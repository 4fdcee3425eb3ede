"""Random-access document sources: `len(src)`, `src[i]` -> one document.

A document is a `str` (to be tokenized) or a 1-D int array (pre-tokenized
ids). Every source reads lazily, pickles by its arguments (so grain worker
processes can rebuild it), knows where row `i` lives (`where(i)`, for error
messages) and raises `DataError` naming the file and row for rows it cannot
decode.

    TextFileSource(files, column)      .jsonl/.json/.txt (+ .gz), in memory
    ParquetSource(files, column)       pyarrow, one row group cached per thread
    ArrayRecordSource(files, column)   tf.train.Example (parsed with TFDS's
                                       bundled protos, no TensorFlow), JSON
                                       objects, or plain UTF-8 records
    HFSource(dataset, column, name)    a `datasets.Dataset` (arrow, mmap)
"""

from __future__ import annotations

import bisect
import json
import os
import threading
from typing import Any, Sequence

import numpy as np

from maxtext_like.data import documents
from maxtext_like.data.errors import DataError

Document = "str | np.ndarray"


def _as_document(value: Any, where: str, column: str) -> Any:
  """A column value -> str or int32 ids; anything else is a DataError."""
  if isinstance(value, str):
    return value
  if isinstance(value, bytes):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(f"{where}: column {column!r} is not valid UTF-8 ({e})") from None
  if isinstance(value, (list, tuple, np.ndarray)) and (len(value) == 0 or np.issubdtype(np.asarray(value).dtype, np.integer)):
    return np.asarray(value, np.int32)
  raise DataError(f"{where}: column {column!r} holds {type(value).__name__}; expected text or a list of token ids")


class _Files:
  """Cumulative row offsets over files, for `where(i)`."""

  def __init__(self, files: Sequence[str], counts: Sequence[int]):
    self.files = list(files)
    self.starts = list(np.cumsum([0, *counts]))

  def locate(self, i: int) -> tuple[int, int]:
    f = bisect.bisect_right(self.starts, i) - 1
    return f, i - self.starts[f]

  def where(self, i: int) -> str:
    f, row = self.locate(i)
    return f"{self.files[f]} row {row}"


def _check_not_empty(files: Sequence[str], counts: Sequence[int]) -> None:
  empty = [f for f, n in zip(files, counts) if n == 0]
  if empty:
    raise DataError(f"empty data file(s) (0 records): {empty}")


class TextFileSource:
  """Documents of local .jsonl/.json/.txt files (see `documents`), read into memory."""

  def __init__(self, files: Sequence[str] | str, column: str = "text"):
    self._args = (files, column)
    self.files = documents.expand_files(files)
    per_file = [documents.read_file_documents(f, column) for f in self.files]
    _check_not_empty(self.files, [len(d) for d in per_file])
    self._docs = [d for docs in per_file for d in docs]
    self._index = _Files(self.files, [len(d) for d in per_file])

  def __reduce__(self):
    return (type(self), self._args)

  def __len__(self) -> int:
    return len(self._docs)

  def __getitem__(self, i: int):
    return self._docs[i]

  def where(self, i: int) -> str:
    return self._index.where(i)


class ParquetSource:
  """Rows of local Parquet files; reads one row group at a time (cached per thread)."""

  def __init__(self, files: Sequence[str] | str, column: str = "text"):
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    self._args = (files, column)
    self.files, self.column = documents.expand_files(files), column
    self._groups: list[tuple[int, int]] = []  # (file index, row group) in row order
    group_rows = []
    counts = []
    for fi, f in enumerate(self.files):
      try:
        meta = pq.ParquetFile(f)
      except Exception as e:  # noqa: BLE001 (pyarrow raises several types)
        raise DataError(f"{f}: not a readable Parquet file ({e})") from None
      names = meta.schema_arrow.names
      if column not in names:
        raise DataError(f"{f}: no column {column!r} (train_data_columns/eval_data_columns); columns are {names}")
      counts.append(meta.metadata.num_rows)
      for g in range(meta.num_row_groups):
        self._groups.append((fi, g))
        group_rows.append(meta.metadata.row_group(g).num_rows)
    _check_not_empty(self.files, counts)
    self._group_starts = list(np.cumsum([0, *group_rows]))
    self._index = _Files(self.files, counts)
    self._local = threading.local()

  def __reduce__(self):
    return (type(self), self._args)

  def __len__(self) -> int:
    return self._group_starts[-1]

  def _group(self, g: int) -> list:
    cache = self._local.__dict__
    if cache.get("g") != g:
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
      fi, rg = self._groups[g]
      cache["rows"] = pq.ParquetFile(self.files[fi]).read_row_group(rg, columns=[self.column]).column(0).to_pylist()
      cache["g"] = g
    return cache["rows"]

  def __getitem__(self, i: int):
    g = bisect.bisect_right(self._group_starts, i) - 1
    value = self._group(g)[i - self._group_starts[g]]
    return _as_document(value, self.where(i), self.column)

  def where(self, i: int) -> str:
    return self._index.where(i)


def _parse_example(raw: bytes, column: str, where: str):
  """A serialized tf.train.Example's `column` (bytes or int64 list), parsed without TensorFlow."""
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top

  example = tf_example_pb2.Example.FromString(raw)
  feature = example.features.feature
  if column not in feature:
    raise DataError(f"{where}: tf.train.Example has no feature {column!r}; features are {sorted(feature)}")
  f = feature[column]
  kind = f.WhichOneof("kind")
  if kind == "bytes_list":
    return b"".join(f.bytes_list.value)
  if kind == "int64_list":
    return list(f.int64_list.value)
  raise DataError(f"{where}: feature {column!r} is a {kind}; expected bytes (text) or int64 (ids)")


class ArrayRecordSource:
  """Records of local ArrayRecord files: tf.train.Example, a JSON object, or UTF-8 text."""

  def __init__(self, files: Sequence[str] | str, column: str = "text"):
    import grain  # pylint: disable=g-import-not-at-top

    self._args = (files, column)
    self.files, self.column = documents.expand_files(files), column
    counts = []
    for f in self.files:
      try:
        counts.append(len(grain.sources.ArrayRecordDataSource([f])))
      except Exception as e:  # noqa: BLE001 (array_record raises RuntimeError etc.)
        raise DataError(f"{f}: not a readable ArrayRecord file ({' '.join(str(e).split())[:200]})") from None
    _check_not_empty(self.files, counts)
    self._index = _Files(self.files, counts)
    self._src = grain.sources.ArrayRecordDataSource(self.files)
    self._format = None
    self._format = self._detect(self._src[0])
    self[0]  # pylint: disable=pointless-statement  # fail now (missing column) rather than mid-training

  def __reduce__(self):
    return (type(self), self._args)

  @staticmethod
  def _detect(raw: bytes) -> str:
    if raw[:1] == b"{":
      return "json"
    try:
      from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
      if tf_example_pb2.Example.FromString(raw).features.feature:
        return "example"
    except Exception:  # noqa: BLE001 (not a proto)
      pass
    return "text"

  def __len__(self) -> int:
    return len(self._src)

  def __getitem__(self, i: int):
    raw, where = self._src[i], self.where(i)
    if self._format == "example":
      try:
        value = _parse_example(raw, self.column, where)
      except DataError:
        raise
      except Exception as e:  # noqa: BLE001 (protobuf DecodeError)
        raise DataError(f"{where}: not a tf.train.Example like the first record ({e})") from None
    elif self._format == "json":
      try:
        record = json.loads(raw)
      except ValueError as e:
        raise DataError(f"{where}: not a JSON object like the first record ({e})") from None
      if self.column not in record:
        raise DataError(f"{where}: no field {self.column!r}; fields are {sorted(record)}")
      value = record[self.column]
    else:
      value = raw
    return _as_document(value, where, self.column)

  def where(self, i: int) -> str:
    return self._index.where(i)


class HFSource:
  """One column of a Hugging Face `datasets.Dataset` (arrow, memory-mapped)."""

  def __init__(self, dataset, column: str, name: str):
    if column not in dataset.column_names:
      raise DataError(f"{name}: no column {column!r} (train_data_columns/eval_data_columns); columns are {dataset.column_names}")
    if len(dataset) == 0:
      raise DataError(f"{name}: the dataset split is empty")
    self._ds, self.column, self.name = dataset.select_columns([column]), column, name

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, i: int):
    return _as_document(self._ds[int(i)][self.column], self.where(i), self.column)

  def where(self, i: int) -> str:
    return f"{self.name} row {i}"


def source_name(src) -> str:
  return getattr(src, "name", None) or ",".join(os.path.basename(f) for f in getattr(src, "files", [])) or type(src).__name__


class TfdsSource:
  """One feature of a prepared TFDS dataset in a local data dir, read with `tfds.data_source` (ArrayRecord, no TensorFlow)."""

  def __init__(self, data_dir: str, name: str, split: str, column: str):
    self._args = (data_dir, name, split, column)
    self.column, self.name = column, f"tfds {name} split {split} in {data_dir or '(default data dir)'}"
    if data_dir and not os.path.isdir(data_dir):
      raise FileNotFoundError(f"dataset_path {data_dir!r} (the TFDS data dir) does not exist")
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    try:
      self._src = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # noqa: BLE001 (tfds raises many types: DatasetNotFoundError, AssertionError, ...)
      raise DataError(f"{self.name}: cannot open ({type(e).__name__}: {' '.join(str(e).split())[:400]}). It must be prepared "
                      "in the array_record file format (tfds build --file_format=array_record).") from None
    if len(self._src) == 0:
      raise DataError(f"{self.name}: the split is empty")
    first = self._src[0]
    if column not in first:
      raise DataError(f"{self.name}: no feature {column!r} (train_data_columns/eval_data_columns); features are {sorted(first)}")

  def __reduce__(self):
    return (type(self), self._args)

  def __len__(self) -> int:
    return len(self._src)

  def __getitem__(self, i: int):
    try:
      record = self._src[int(i)]
    except Exception as e:  # noqa: BLE001
      raise DataError(f"{self.where(i)}: undecodable record ({type(e).__name__}: {e})") from None
    return _as_document(record[self.column], self.where(i), self.column)

  def where(self, i: int) -> str:
    return f"{self.name} row {i}"
