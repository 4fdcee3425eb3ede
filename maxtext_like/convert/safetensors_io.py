"""Minimal safetensors reading (memory-mapped, one tensor at a time) and sharded writing, numpy only.

The format is 8 bytes little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the
raw little-endian bytes. Reading maps the file, so a tensor costs memory only when it is used; bfloat16 and fp8
come from ml_dtypes.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct
from collections.abc import Iterator

import ml_dtypes
import numpy as np

from maxtext_like.convert.errors import ConvertError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"


def checkpoint_files(hf_path: str) -> list[str]:
  """The .safetensors files of a HF checkpoint dir (from the index when sharded); [] when there are none."""
  index = os.path.join(hf_path, INDEX_NAME)
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    return [os.path.join(hf_path, n) for n in sorted(set(weight_map.values()))]
  return sorted(glob.glob(os.path.join(hf_path, "*.safetensors")))


def read_header(path: str) -> tuple[dict, int]:
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
  header.pop("__metadata__", None)
  return header, 8 + n


def iter_tensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
  """(name, read-only memory-mapped array) for every tensor of one file, in file order.

  Each tensor gets its own mapping, unmapped when the caller drops the array: one mapping of the whole file
  would keep every page read so far resident (counted in RSS) until the end of the file."""
  header, start = read_header(path)
  for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    if info["dtype"] not in _DTYPES:
      raise ConvertError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    b, e = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]])
    if e == b:
      yield name, np.zeros(info["shape"], dtype)
    else:
      yield name, np.memmap(path, dtype=dtype, mode="r", offset=start + b, shape=tuple(info["shape"]) or (1,)).reshape(info["shape"])


def _write_file(path: str, tensors: list[tuple[str, np.ndarray]]) -> None:
  header, offset = {}, 0
  for name, a in tensors:
    header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
  header["__metadata__"] = {"format": "pt"}
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for _, a in tensors:
      f.write(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


class ShardedWriter:
  """Writes tensors into shards of at most `max_shard_bytes` (one `model.safetensors` if it all fits).

  Tensor bytes go to a data file as they are added (no array is kept); a shard is the header + that file.
  """

  def __init__(self, directory: str, max_shard_bytes: int):
    self.directory, self.max = directory, max_shard_bytes
    self.pending: list[tuple[str, np.dtype, tuple[int, ...], int]] = []
    self.pending_bytes = 0
    self.shards: list[list[str]] = []
    self.total = 0
    self._data = None

  def add(self, name: str, array: np.ndarray) -> None:
    if self.pending and self.pending_bytes + array.nbytes > self.max:
      self._flush()
    if self._data is None:
      self._data = open(os.path.join(self.directory, f"shard-{len(self.shards):05d}.data"), "wb")
    np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tofile(self._data)
    self.pending.append((name, array.dtype, tuple(array.shape), array.nbytes))
    self.pending_bytes += array.nbytes
    self.total += array.nbytes

  def _flush(self) -> None:
    if self._data is None:
      self._data = open(os.path.join(self.directory, f"shard-{len(self.shards):05d}.data"), "wb")
    self._data.close()
    data = self._data.name
    header, offset = {}, 0
    for name, dtype, shape, nbytes in self.pending:
      header[name] = {"dtype": _NAMES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
      offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(os.path.join(self.directory, f"shard-{len(self.shards):05d}.tmp"), "wb") as f, open(data, "rb") as src:
      f.write(struct.pack("<Q", len(blob)))
      f.write(blob)
      shutil.copyfileobj(src, f, 16 * 1024**2)
    os.remove(data)
    self.shards.append([n for n, *_ in self.pending])
    self.pending, self.pending_bytes, self._data = [], 0, None

  def close(self) -> list[str]:
    """Writes the last shard, names shards as transformers does (+ index when > 1); returns the file names."""
    if self.pending or not self.shards:
      self._flush()
    n = len(self.shards)
    names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for i, name in enumerate(names):
      os.replace(os.path.join(self.directory, f"shard-{i:05d}.tmp"), os.path.join(self.directory, name))
    if n > 1:
      weight_map = {t: names[i] for i, shard in enumerate(self.shards) for t in shard}
      with open(os.path.join(self.directory, INDEX_NAME), "w") as f:
        json.dump({"metadata": {"total_size": self.total}, "weight_map": weight_map}, f, indent=2)
    return names
