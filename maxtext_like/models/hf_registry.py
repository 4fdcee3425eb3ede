"""Hugging Face <-> maxtext_like mapping protocol, one `HFMapping` per family, keyed by `decoder_block`, and the
table mechanism (`TableMapping`) that every family declares its mapping with.

A family module (models/families/) also owns how its weights and config look in Hugging Face `transformers`. It
declares its tensor names in tables and names an instance in its Family record (`FAMILY = Family(..., hf=LlamaHF())`):

  class LlamaHF(TableMapping):
    architectures = ("LlamaForCausalLM", "MistralForCausalLM")
    layer_table = Table(NORM_ROWS, QKVO_ROWS, ..., mlp_rows())  # suffixes below model.layers.i / decoder.layers.i
    global_table = Table(GLOBAL_ROWS)                            # whole names (embedding, final norm, lm_head)
    def model_keys_from_hf(self, hf_config): ...
    def hf_config_from(self, spec): ...

A row is (HF suffix, our suffix, kind): ("self_attn.q_proj.weight", "self_attention.query.kernel", "q"). The kind
names an entry of `KINDS`, a function each way that must invert the other bit-exactly: copy, T (torch Linear
[out, in] -> kernel [in, out]), q / kv / o head reshapes, q_bias / kv_bias, MLA's mla_*, GPT-2's Conv1D, fused
groups. Three row forms go beyond one tensor <-> one tensor:
- per expert: an HF suffix holding '{e}' ("mlp.experts.{e}.gate_proj.weight" -> "mlp.wi_0") is slice e of our
  stacked [E, ...] parameter ('decoder.layers.3.mlp.wi_0[5]'); `to_hf` splits the parameter along axis 0
  (`moe_block.hf_expert_rows` gives a MoeBlock's rows);
- fused: a tuple of our suffixes and a `Fused` kind (("mlp.wi_0", "mlp.wi_1"), "gate_up_halves") splits one HF
  tensor into several of ours; `to_hf_many` joins them back once the group is complete;
- dropped: our suffix None and kind "drop" (GPT-2's "attn.bias" mask buffer) maps the HF tensor to nothing.
HF layer i is the i-th layer across the family's layer stacks (decoder.layers.i, or dense_layers / moe_layers).
What tables cannot say goes in hooks, not in new walking code: `table_for(spec)` (rows that depend on the spec:
gpt3's fused_qkv), `our_layer` / `hf_layer` (gemma2's [local, global] pairs), `hf_layers` (GPT-2's
"transformer.h."), `ignored_suffixes` (rotary_emb.inv_freq), `tied_head`. A new numeric layout is a new entry in
KINDS with its exact inverse. Tables are checked when built (unknown kind, a suffix in two rows), i.e. at import.

The generic converter (`maxtext_like/convert/`) does everything else: reading/writing safetensors shard by
shard, checking that every parameter is produced exactly once with the right shape (one error listing all
problems), dtype casts, scanned stacking, orbax writing. A mapping never sees files, dtypes or the scanned layout.

Conventions (the protocol; TableMapping implements to_ours / to_hf / to_hf_many from the tables)
- Arrays are numpy arrays (float32 for tests; whatever the file holds otherwise). Return numpy arrays; do not
  cast dtypes (the converter casts to `weight_dtype` on the way in and to the checkpoint's dtype on the way out).
- Our parameter paths are dotted strings of the *unscanned* (scan_layers=False, loop) layout, i.e. the keys of
  `nnx.to_flat_state(nnx.state(model, nnx.Param))` joined with '.':
      token_embedder.embedding                        [V, D]
      decoder.layers.{i}.self_attention.query.kernel  [D, N, H]
      decoder.layers.{i}.mlp.wi_0.kernel              [D, F]
      decoder.decoder_norm.scale                      [D]
      decoder.logits_dense.kernel                     [D, V]   (absent when logits_via_embedding)
  For scan_layers=True the converter strips the '{i}.' and stacks layer i at `spec.param_scan_axis`; a
  mapping therefore always produces/consumes one layer's tensor with the layer index in the path.
- HF names are the safetensors keys `save_pretrained` writes, e.g. 'model.layers.3.self_attn.q_proj.weight'.
- `to_ours(spec, hf_name, array) -> list[(our_path, array)] | None`:
    one HF tensor -> zero or more of ours. Return None for a name the family does not know (the converter
    reports it as unexpected), [] for a known tensor that has no counterpart (e.g. 'rotary_emb.inv_freq', or
    'lm_head.weight' of a tied checkpoint). Numeric quirks live here (transposes, head reshapes, Gemma's
    `1 + scale` norms, scaling of embeddings...). A path may address one index of a parameter's axis 0,
    `'decoder.layers.3.mlp.wi_0[5]'` (one HF tensor per expert of a stacked [E, D, F] kernel, see mixtral.py):
    the converter writes that slice and requires every index exactly once. Do not raise on a tensor of the
    wrong shape (the kinds pass it through unreshaped): the converter lists it with the other problems.
- `to_hf(spec, our_path, array) -> list[(hf_name, array)]`: the exact inverse, one of ours -> one or more
  HF tensors. Raise KeyError for a path the family does not know.
- `to_hf(to_ours(x))` must round-trip bit-exactly (tested for every family). An HF tensor fused from several of
  ours (GPT-2's c_attn, gpt-oss's gate_up_proj) maps to all of them via to_ours; the reverse needs all of them,
  so the converter calls `to_hf_many`, which by default calls `to_hf` per tensor (TableMapping's joins fused
  groups; its `to_hf` raises KeyError for one member of a group).
- `model_keys_from_hf(hf_config: dict) -> dict`: the flat maxtext_like config keys (base.yml names) that
  describe this checkpoint's architecture: decoder_block, base_emb_dim, base_num_query_heads,
  base_num_kv_heads, head_dim, base_mlp_dim, base_num_decoder_layers, vocab_size,
  normalization_layer_epsilon, rope_max_timescale, rope_type, logits_via_embedding, sliding_window_size,
  mlp_activations, and family keys (attention_bias, use_qk_norm, ...). Written as OUTPUT/model.yml, it is a
  preset (`model_name=OUTPUT/model.yml`). Raise `HFConfigError` for a config the family cannot represent
  (e.g. an unsupported rope_scaling type), naming the field.
- `hf_config_from(spec: ModelSpec) -> dict`: a config.json that `transformers.AutoConfig` loads into the
  matching `*ForCausalLM` with the same architecture (include "architectures", "model_type",
  the dtype field may be left to the converter). Tests compare parameter counts of the meta-device HF model
  built from it with ours, for every preset of the family.
- `architectures`: HF `architectures[0]` values this mapping accepts for conversion to ours.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from maxtext_like.models.spec import ModelSpec


class HFConfigError(ValueError):
  """A Hugging Face config.json this family cannot represent."""


class HFMapping(abc.ABC):
  """Base class of a family's HF mapping; see the module docstring for the contract. The four methods below are
  abstract: the family module instantiates the class, so a family missing one fails when it is imported."""

  architectures: tuple[str, ...] = ()
  decoder_blocks: tuple[str, ...] = ()  # filled in by the Family that holds it

  @abc.abstractmethod
  def model_keys_from_hf(self, hf_config: dict) -> dict[str, Any]:
    """The flat config keys describing this checkpoint's architecture."""

  @abc.abstractmethod
  def hf_config_from(self, spec: ModelSpec) -> dict[str, Any]:
    """A config.json for `spec`."""

  @abc.abstractmethod
  def to_ours(self, spec: ModelSpec, hf_name: str, array: np.ndarray) -> list[tuple[str, np.ndarray]] | None:
    """One HF tensor -> zero or more of ours (None: a name the family does not know)."""

  @abc.abstractmethod
  def to_hf(self, spec: ModelSpec, our_path: str, array: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """One of ours -> one or more HF tensors (KeyError: a path the family does not know)."""

  def to_hf_many(self, spec: ModelSpec, items: Iterable[tuple[str, np.ndarray]]):
    """Yields (hf_name, array) for (our_path, array) items; override to fuse several of ours into one HF tensor."""
    for path, array in items:
      yield from self.to_hf(spec, path, array)


def hf_mappings() -> dict[str, HFMapping]:
  """decoder_block -> its family's mapping, for every family that has one."""
  from maxtext_like.models.registry import all_families
  return {name: f.hf for f in all_families() if f.hf is not None for name in f.names}


def get_hf_mapping(decoder_block: str) -> HFMapping:
  from maxtext_like.models.registry import ModelSpecError, get_family
  try:
    mapping = get_family(decoder_block).hf
  except ModelSpecError:
    mapping = None
  if mapping is None:
    raise HFConfigError(f"decoder_block {decoder_block!r} has no Hugging Face mapping; "
                        f"families with one: {sorted(hf_mappings())}") from None
  return mapping


def mapping_for_architecture(architecture: str) -> HFMapping:
  mappings = hf_mappings().values()
  for m in mappings:
    if architecture in m.architectures:
      return m
  known = sorted({a for m in mappings for a in m.architectures})
  raise HFConfigError(f"Hugging Face architecture {architecture!r} is not supported; supported: {known}")


def state_dict_to_params(spec: ModelSpec, state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Our loop-layout flat params ('decoder.layers.0....') from an HF state_dict, via the family's mapping."""
  mapping = get_hf_mapping(spec.decoder_block)
  out: dict[str, np.ndarray] = {}
  for name, array in state_dict.items():
    produced = mapping.to_ours(spec, name, np.asarray(array))
    if produced is None:
      raise KeyError(f"unexpected HF tensor {name!r}")
    for path, value in produced:
      if path in out:
        raise KeyError(f"{path!r} produced twice")
      out[path] = value
  return out


# ---- table-driven mappings ----------------------------------------------------------------------------------

def linear_to_kernel(w: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
  """torch Linear weight [out, in] -> our kernel in_shape + out_shape."""
  return np.ascontiguousarray(w.T).reshape(*in_shape, *out_shape)


def kernel_to_linear(k: np.ndarray, n_in: int) -> np.ndarray:
  """Our kernel (first n_in axes are inputs) -> torch Linear weight [out, in]."""
  n_i = int(np.prod(k.shape[:n_in]))
  return np.ascontiguousarray(k.reshape(n_i, -1).T)


@dataclasses.dataclass(frozen=True)
class Kind:
  """One HF tensor <-> one of ours: `to_ours(spec, w)` and its bit-exact inverse `to_hf(spec, k)`."""
  to_ours: Callable[[ModelSpec, np.ndarray], np.ndarray]
  to_hf: Callable[[ModelSpec, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Fused:
  """One HF tensor <-> several of ours (a row whose our side is a tuple, in that order): `split(spec, w)` gives
  their arrays, `join(spec, arrays)` the HF tensor back."""
  split: Callable[[ModelSpec, np.ndarray], list[np.ndarray]]
  join: Callable[[ModelSpec, list[np.ndarray]], np.ndarray]


def _linear(shapes: Callable[[ModelSpec], tuple[tuple[int, ...], tuple[int, ...]]]) -> Kind:
  """torch Linear [out, in] <-> our kernel in_shape + out_shape, (in_shape, out_shape) = shapes(spec). A weight of
  another shape passes unchanged, so that the converter reports it instead of a reshape scrambling it."""
  def to_ours(spec, w):
    n_in, n_out = shapes(spec)
    return w if w.shape != (math.prod(n_out), math.prod(n_in)) else linear_to_kernel(w, n_in, n_out)
  return Kind(to_ours, lambda spec, k: kernel_to_linear(k, len(shapes(spec)[0])))


def _heads_bias(heads: Callable[[ModelSpec], int]) -> Kind:
  """[n*H] <-> [n, H]."""
  def to_ours(spec, w):
    n, H = heads(spec), spec.head_dim
    return w.reshape(n, H) if w.shape == (n * H,) else w
  return Kind(to_ours, lambda spec, k: k.reshape(-1))


def _reshaped(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """w reshaped when sizes agree (else unchanged: the converter reports the wrong shape)."""
  return w.reshape(shape) if w.size == math.prod(shape) else w


def _split_qkv(spec, w):  # Conv1D c_attn [..., N*H + 2*K*H] -> query/key/value [..., n, H]
  N, K, H = spec.num_query_heads, spec.num_kv_heads, spec.head_dim
  sizes = (N * H, K * H, K * H)
  if w.shape[-1] != sum(sizes):
    return [w, w, w]  # reported as mis-shaped
  parts = np.split(w, np.cumsum(sizes)[:-1], axis=-1)
  return [np.ascontiguousarray(a).reshape(*w.shape[:-1], n, H) for a, n in zip(parts, (N, K, K))]


def _interleave(spec, parts):
  gate, up = parts
  fused = np.empty((*gate.shape[:-1], 2 * gate.shape[-1]), gate.dtype)
  fused[..., 0::2], fused[..., 1::2] = gate, up
  return fused


def _mla_q_dim(spec):
  return spec.qk_nope_head_dim + spec.qk_rope_head_dim


_copy = lambda spec, w: w  # noqa: E731
_T = lambda spec, w: np.ascontiguousarray(w.T)  # noqa: E731

# Tensor kinds by name; a table row names one. torch Linear weights are [out, in] (W.T is our kernel), GPT-2's Conv1D
# weights [in, out]. D emb_dim, N/K query/kv heads, H head_dim.
KINDS: dict[str, Kind | Fused] = {
    "copy": Kind(_copy, _copy),
    "T": Kind(_T, _T),  # Linear [out, in] <-> kernel [in, out]
    "q": _linear(lambda s: ((s.emb_dim,), (s.num_query_heads, s.head_dim))),  # [N*H, D] <-> [D, N, H]
    "kv": _linear(lambda s: ((s.emb_dim,), (s.num_kv_heads, s.head_dim))),  # [K*H, D] <-> [D, K, H]
    "o": _linear(lambda s: ((s.num_query_heads, s.head_dim), (s.emb_dim,))),  # [D, N*H] <-> [N, H, D]
    "q_bias": _heads_bias(lambda s: s.num_query_heads),  # [N*H] <-> [N, H]
    "kv_bias": _heads_bias(lambda s: s.num_kv_heads),  # [K*H] <-> [K, H]
    # MLA (models/mla.py): Q q_lora_rank, R kv_lora_rank, Hn/Hr/Hv qk_nope/qk_rope/v head dims
    "mla_q": _linear(lambda s: ((s.emb_dim,), (s.num_query_heads, _mla_q_dim(s)))),  # [N*(Hn+Hr), D] <-> [D, N, Hn+Hr]
    "mla_q_b": _linear(lambda s: ((s.q_lora_rank,), (s.num_query_heads, _mla_q_dim(s)))),  # -> [Q, N, Hn+Hr]
    "mla_kv_b": _linear(lambda s: ((s.kv_lora_rank,), (s.num_query_heads, s.qk_nope_head_dim + s.v_head_dim))),
    "mla_o": _linear(lambda s: ((s.num_query_heads, s.v_head_dim), (s.emb_dim,))),  # [D, N*Hv] <-> [N, Hv, D]
    # GPT-2 Conv1D
    "o_conv1d": Kind(lambda s, w: _reshaped(w, (s.num_query_heads, s.head_dim, s.emb_dim)),
                     lambda s, k: k.reshape(-1, k.shape[-1])),  # [N*H, D] <-> [N, H, D]
    "qkv_conv1d": Kind(lambda s, w: _reshaped(w, (*w.shape[:-1], 3, s.num_query_heads, s.head_dim)),
                       lambda s, k: k.reshape(*k.shape[:-3], -1)),  # [..., 3*N*H] <-> [..., 3, N, H]
    "qkv_conv1d_split": Fused(_split_qkv, lambda s, parts: np.concatenate(
        [p.reshape(*p.shape[:-2], -1) for p in parts], axis=-1)),  # [..., (N+2K)*H] <-> 3 x [..., n, H]
    # fused expert gate/up [..., 2F] <-> wi_0, wi_1 [..., F]
    "gate_up_interleaved": Fused(lambda s, w: [np.ascontiguousarray(w[..., 0::2]), np.ascontiguousarray(w[..., 1::2])],
                                 _interleave),
    "gate_up_halves": Fused(lambda s, w: [np.ascontiguousarray(w[..., :w.shape[-1] // 2]),
                                          np.ascontiguousarray(w[..., w.shape[-1] // 2:])],
                            lambda s, parts: np.concatenate(parts, axis=-1)),
}
Row = tuple[str, Any, str]  # (HF suffix, our suffix | tuple of them | None, kind name)


class _Row(NamedTuple):
  hf: str
  ours: str | tuple[str, ...] | None
  kind: Kind | Fused | None


class Table:
  """Rows (HF suffix, our suffix, kind name in KINDS), compiled for look-ups both ways; `Table(rows_a, rows_b)` joins
  groups of rows. An HF suffix holding '{e}' names one expert's tensor: it fills slice e of our stacked [E, ...]
  parameter (`to_ours` returns 'path[e]') and `to_hf` splits that parameter along axis 0. A tuple of our suffixes
  is a fused group (its kind a `Fused`); our suffix None with kind 'drop' maps the HF tensor to nothing. A bad row
  (unknown kind, a suffix twice) fails when the table is built, i.e. when the family module is imported."""

  def __init__(self, *groups: Iterable[Row]):
    self.rows: tuple[Row, ...] = tuple(row for group in groups for row in group)
    self._hf: dict[str, _Row] = {}
    self._experts: list[tuple[re.Pattern, _Row]] = []
    self._ours: dict[str, _Row] = {}
    for hf, ours, kind_name in self.rows:
      kind = KINDS.get(kind_name)
      fused, expert = isinstance(ours, tuple), "{e}" in hf
      if (kind_name != "drop" if ours is None else kind is None or isinstance(kind, Fused) != fused or
          (expert and fused)):
        raise ValueError(f"table row {(hf, ours, kind_name)}: unknown kind, or kind and our side disagree")
      row = _Row(hf, ours, kind)
      if expert:
        self._experts.append((re.compile(re.escape(hf).replace(re.escape("{e}"), r"(\d+)")), row))
      elif self._hf.setdefault(hf, row) is not row:
        raise ValueError(f"HF suffix {hf!r} is in two table rows")
      for o in (ours if fused else () if ours is None else (ours,)):
        if self._ours.setdefault(o, row) is not row:
          raise ValueError(f"our suffix {o!r} is in two table rows")

  def from_hf(self, name: str) -> tuple[_Row, str | None] | None:
    """(row, expert index or None) for an HF suffix, None if no row has it."""
    if name in self._hf:
      return self._hf[name], None
    for pattern, row in self._experts:
      m = pattern.fullmatch(name)
      if m:
        return row, m.group(1)
    return None

  def from_ours(self, name: str) -> _Row | None:
    return self._ours.get(name)


_OUR_LAYER = re.compile(r"decoder\.(\w*layers)\.(\d+)\.(.+)")


class TableMapping(HFMapping):
  """`to_ours` / `to_hf` / `to_hf_many` from declared tables: a family sets `layer_table` (suffixes below one HF
  layer `{hf_layers}{i}.` and below our layer) and `global_table` (whole names), and keeps only its config
  translation (`model_keys_from_hf`, `hf_config_from`). HF layer i is the i-th layer across the family's layer
  stacks (`decoder.layers.i`, or `decoder.dense_layers.i` / `decoder.moe_layers.(i - k)`); a family whose layers
  group differently overrides `our_layer` / `hf_layer`, one whose rows depend on the spec overrides `table_for`."""

  layer_table = Table()
  global_table = Table()
  hf_layers = "model.layers."  # HF layer i's tensors are named f"{hf_layers}{i}.{suffix}"
  ignored_suffixes: tuple[str, ...] = ("rotary_emb.inv_freq",)  # HF names ending so map to nothing (buffers)
  tied_head = "lm_head.weight"  # mapped to nothing when spec.logits_via_embedding (a tied checkpoint may store it)

  def table_for(self, spec: ModelSpec) -> Table:
    """The layer table for `spec`."""
    return self.layer_table

  def our_layer(self, spec: ModelSpec, i: int) -> str:
    """Our path prefix ('decoder.layers.3.') of HF layer i; beyond the model, decoder.layers.i (reported)."""
    from maxtext_like.models.family import family_of
    offset = 0
    for st in family_of(spec).stacks(spec):
      if i < offset + st.num_layers:
        return f"decoder.{st.name}.{i - offset}."
      offset += st.num_layers
    return f"decoder.layers.{i}."

  def hf_layer(self, spec: ModelSpec, our_path: str) -> tuple[int, str] | None:
    """(HF layer index, our suffix) of a layer path, None for a path outside the layers."""
    from maxtext_like.models.family import family_of
    m = _OUR_LAYER.fullmatch(our_path)
    if not m:
      return None
    offset = 0
    for st in family_of(spec).stacks(spec):
      if st.name == m.group(1):
        return offset + int(m.group(2)), m.group(3)
      offset += st.num_layers
    raise KeyError(our_path)

  def to_ours(self, spec: ModelSpec, hf_name: str, array: np.ndarray):
    if hf_name.endswith(self.ignored_suffixes) or (hf_name == self.tied_head and spec.logits_via_embedding):
      return []
    m = re.fullmatch(re.escape(self.hf_layers) + r"(\d+)\.(.+)", hf_name)
    prefix, table, name = (self.our_layer(spec, int(m.group(1))), self.table_for(spec), m.group(2)) if m else \
        ("", self.global_table, hf_name)
    hit = table.from_hf(name)
    if hit is None:
      return None
    row, e = hit
    if row.ours is None:
      return []
    if isinstance(row.kind, Fused):
      return [(prefix + o, a) for o, a in zip(row.ours, row.kind.split(spec, array))]
    return [(prefix + row.ours + ("" if e is None else f"[{e}]"), row.kind.to_ours(spec, array))]

  def _row_of(self, spec: ModelSpec, our_path: str) -> tuple[str, _Row, str]:
    """(HF name prefix, row, our suffix) of one of our paths; KeyError for a path no row has."""
    loc = self.hf_layer(spec, our_path)
    prefix, table, name = (f"{self.hf_layers}{loc[0]}.", self.table_for(spec), loc[1]) if loc else \
        ("", self.global_table, our_path)
    row = table.from_ours(name)
    if row is None:
      raise KeyError(our_path)
    return prefix, row, name

  def to_hf(self, spec: ModelSpec, our_path: str, array: np.ndarray):
    prefix, row, _ = self._row_of(spec, our_path)
    if isinstance(row.kind, Fused):
      raise KeyError(f"{our_path}: {row.ours} are fused into {prefix + row.hf}; convert them with to_hf_many")
    if "{e}" in row.hf:
      return [(prefix + row.hf.replace("{e}", str(e)), row.kind.to_hf(spec, array[e])) for e in range(array.shape[0])]
    return [(prefix + row.hf, row.kind.to_hf(spec, array))]

  def to_hf_many(self, spec: ModelSpec, items: Iterable[tuple[str, np.ndarray]]):
    """`to_hf` per tensor, except that the members of a fused group are held until the group is complete, then
    joined into their one HF tensor."""
    pending: dict[str, dict[str, np.ndarray]] = {}
    for path, array in items:
      try:
        prefix, row, name = self._row_of(spec, path)
      except KeyError:
        row = None
      if row is None or not isinstance(row.kind, Fused):
        yield from self.to_hf(spec, path, array)
        continue
      group = pending.setdefault(prefix + row.hf, {})
      group[name] = array
      if len(group) == len(row.ours):
        del pending[prefix + row.hf]
        yield prefix + row.hf, row.kind.join(spec, [group[o] for o in row.ours])
    if pending:
      raise KeyError(f"incomplete fused groups: {sorted((k, sorted(v)) for k, v in pending.items())}")
