"""Reads text documents from local files into memory.

Supported files (optionally gzip-compressed, by a trailing `.gz`):
  * `.jsonl` / `.json`: one JSON object per line; the document is the string
    field `data_column` (default "text"). Blank lines are skipped.
  * `.txt`: one document per non-empty line (the Hugging Face "text" loader
    convention); line breaks inside a document are not representable.

Glob patterns (`*`, `?`, `[`) in a file name are expanded. Documents are
returned in file order, then line order, so a document's index is stable and
can be sharded by index.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from typing import Iterator, Sequence

from maxtext_like.data.errors import DataError

_JSON_SUFFIXES = (".jsonl", ".json")
_TEXT_SUFFIXES = (".txt",)


def expand_files(files: Sequence[str] | str) -> list[str]:
  """Expands globs; raises FileNotFoundError naming every missing file."""
  if isinstance(files, (str, os.PathLike)):
    files = [files]
  out, missing = [], []
  for f in map(os.fspath, files):
    if any(c in f for c in "*?["):
      matches = sorted(glob.glob(f))
      if matches:
        out.extend(matches)
      else:
        missing.append(f)
    elif os.path.isfile(f):
      out.append(f)
    else:
      missing.append(f)
  if missing:
    raise FileNotFoundError(
        f"data file(s) not found: {missing}. Give local .jsonl, .jsonl.gz or"
        " .txt files, or Parquet/ArrayRecord files for dataset_type=grain (the embedded corpus is maxtext_like.assets.corpus_path())."
    )
  if not out:
    raise ValueError("no data files given")
  return out


def _open_text(path: str) -> io.TextIOBase:
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8")
  return open(path, "rt", encoding="utf-8")


def _iter_file(path: str, data_column: str) -> Iterator[str]:
  stem = path[:-3] if path.endswith(".gz") else path
  with _open_text(path) as f:
    if stem.endswith(_TEXT_SUFFIXES):
      for line in f:
        if line.strip():
          yield line.rstrip("\r\n")
      return
    if not stem.endswith(_JSON_SUFFIXES):
      raise ValueError(
          f"{path}: unsupported data file type; expected one of"
          f" {_JSON_SUFFIXES + _TEXT_SUFFIXES} (optionally .gz)"
      )
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError as e:
        raise DataError(f"{path}:{lineno}: not a JSON object ({e})") from None
      if not isinstance(record, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
      if data_column not in record:
        raise DataError(
            f"{path}:{lineno}: no field {data_column!r} (data_column); fields"
            f" are {sorted(record)}"
        )
      yield str(record[data_column])


def read_file_documents(path: str, data_column: str = "text") -> list[str]:
  """The documents of one file; undecodable bytes are a DataError naming the file."""
  try:
    return list(_iter_file(path, data_column))
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  except (OSError, EOFError) as e:
    raise DataError(f"{path}: unreadable ({e})") from None


def read_documents(files: Sequence[str] | str, data_column: str = "text") -> list[str]:
  """All documents of `files` (see module docstring), in a stable order."""
  return [doc for path in expand_files(files) for doc in read_file_documents(path, data_column)]
