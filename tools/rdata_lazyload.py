"""Minimal reader for R "lazy-load" data databases (``data/Rdata.rdb`` + ``.rdx``).

Only what `make_embedded_assets.py` needs: character, integer, double and
logical vectors, lists and pairlists, in R's XDR serialization (versions 2 and
3). This avoids installing R just to extract the text of an R data package.

Format (R's `src/main/serialize.c`, `lazyLoadDBinsertValue`):
  * ``.rdx`` is a gzip-compressed serialized list with ``variables`` (a named
    list of ``c(offset, length)`` into the ``.rdb`` file) and ``compressed``.
  * each ``.rdb`` block is a 4-byte big-endian uncompressed length followed by
    zlib data (``compressed`` = 1; 2 = bzip2 and 3 = xz carry a type byte).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import pathlib
import struct
import zlib
from typing import Any

# SEXP type codes used below.
_SYMSXP, _LISTSXP, _CHARSXP, _LGLSXP, _INTSXP, _REALSXP = 1, 2, 9, 10, 13, 14
_STRSXP, _VECSXP = 16, 19
_REFSXP, _NILVALUE_SXP = 255, 254
_SINGLETONS = {241, 242, 247, 251, 252, 253}  # base/empty/global env, missing...


class _Reader:
  """Reads one XDR-serialized R object."""

  def __init__(self, data: bytes):
    self._b = data
    self._p = 0
    self._refs: list[Any] = []

  def _int(self) -> int:
    (v,) = struct.unpack_from(">i", self._b, self._p)
    self._p += 4
    return v

  def read(self) -> Any:
    if self._b[:2] != b"X\n":
      raise ValueError(f"not an XDR R serialization (header {self._b[:2]!r})")
    self._p = 2
    version = self._int()
    self._int()  # writer R version
    self._int()  # minimal reader R version
    if version == 3:
      n = self._int()
      self._p += n  # skip the native encoding name
    return self._item()

  def _item(self) -> Any:
    flags = self._int()
    kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
    if kind == _NILVALUE_SXP or kind in _SINGLETONS:
      return None
    if kind == _REFSXP:
      idx = flags >> 8 or self._int()
      return self._refs[idx - 1]
    if kind == _SYMSXP:
      sym = ("symbol", self._item())
      self._refs.append(sym)
      return sym
    if kind == _CHARSXP:
      n = self._int()
      if n == -1:
        return None  # NA_character_
      s = self._b[self._p:self._p + n].decode("utf-8", "replace")
      self._p += n
      return s
    if kind == _LISTSXP:
      if has_attr:
        self._item()
      tag = self._item() if has_tag else None
      head = [(tag[1] if tag else None, self._item())]
      tail = self._item()
      return head + (tail if isinstance(tail, list) else [])
    if kind in (_STRSXP, _VECSXP):
      value: Any = [self._item() for _ in range(self._int())]
    elif kind in (_INTSXP, _LGLSXP):
      n = self._int()
      value = list(struct.unpack_from(f">{n}i", self._b, self._p))
      self._p += 4 * n
    elif kind == _REALSXP:
      n = self._int()
      value = list(struct.unpack_from(f">{n}d", self._b, self._p))
      self._p += 8 * n
    else:
      raise ValueError(f"unsupported R SEXP type {kind}")
    if has_attr:
      return {"value": value, "attributes": dict(self._item())}
    return value


def _decompress_block(block: bytes, compressed: int) -> bytes:
  if compressed in (0, 1):
    return zlib.decompress(block[4:]) if compressed else block[4:]
  codec = {2: bz2.decompress, 3: lzma.decompress}[compressed]
  return codec(block[5:]) if block[4:5] != b"0" else block[5:]


def read_lazyload_db(prefix: str | pathlib.Path) -> dict[str, Any]:
  """Returns ``{variable name: value}`` for ``<prefix>.rdx`` / ``<prefix>.rdb``."""
  prefix = pathlib.Path(prefix)
  index = _Reader(gzip.decompress(prefix.with_suffix(".rdx").read_bytes())).read()
  fields = dict(zip(index["attributes"]["names"], index["value"]))
  variables = fields["variables"]
  compressed = int(fields["compressed"][0])
  rdb = prefix.with_suffix(".rdb").read_bytes()
  out = {}
  for name, (offset, length) in zip(
      variables["attributes"]["names"], variables["value"]
  ):
    raw = _decompress_block(rdb[offset:offset + length], compressed)
    out[name] = _Reader(raw).read()
  return out
