"""Per-example language-model features and the batch layout (MaxText names).

A batch is a dict of int32 numpy arrays, all [B, T] (B = per-process batch,
T = seq_len):

  inputs, targets                 token ids; targets[t] is the token that
                                  follows inputs[t] in the same document.
  inputs_segmentation,            1, 2, ... numbers the documents packed in a
  targets_segmentation            row; 0 marks padding (mask it out of the loss).
  inputs_position,                position of the token inside its segment,
  targets_position                restarting at 0 for every segment.

The shift is done per document *before* packing: a document of n tokens gives
inputs = tokens[:-1] and targets = tokens[1:], so no target ever comes from
another document and no token of a document is lost at a packing boundary.
Documents longer than T are cut into pieces of T (inputs, targets) pairs; each
piece is its own segment (positions restart at 0), and the target of a piece's
last token is the first input token of the next piece.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

BATCH_KEYS = (
    "inputs",
    "inputs_position",
    "inputs_segmentation",
    "targets",
    "targets_position",
    "targets_segmentation",
)

# grain's packing transforms name the extra features "<key>_segment_ids" and
# "<key>_positions"; MaxText calls them "<key>_segmentation"/"<key>_position".
_GRAIN_TO_MAXTEXT = {
    "inputs": "inputs",
    "targets": "targets",
    "inputs_segment_ids": "inputs_segmentation",
    "targets_segment_ids": "targets_segmentation",
    "inputs_positions": "inputs_position",
    "targets_positions": "targets_position",
}


def lm_pieces(tokens: np.ndarray, seq_len: int, mask: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
  """Splits one document's tokens into shifted (inputs, targets) pieces.

  With a per-token `mask` (SFT: 1 where the token is trained), each piece
  also carries "loss_mask", the mask of its targets.
  Returns [] for documents with fewer than 2 tokens (nothing to predict).
  """
  tokens = np.asarray(tokens, dtype=np.int32)
  inputs, targets = tokens[:-1], tokens[1:]
  pieces = [
      {"inputs": inputs[s:s + seq_len], "targets": targets[s:s + seq_len]}
      for s in range(0, len(inputs), seq_len)
  ]
  if mask is not None:
    target_mask = np.asarray(mask, np.int32)[1:]
    for s, piece in zip(range(0, len(inputs), seq_len), pieces):
      piece["loss_mask"] = target_mask[s:s + seq_len]
  return pieces


def pad_unpacked(piece: Mapping[str, np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
  """One piece per row, right-padded with token 0 and segmentation 0."""
  n = len(piece["inputs"])
  tokens_in = np.zeros(seq_len, np.int32)
  tokens_out = np.zeros(seq_len, np.int32)
  tokens_in[:n], tokens_out[:n] = piece["inputs"], piece["targets"]
  segmentation = (np.arange(seq_len) < n).astype(np.int32)
  position = np.where(segmentation, np.arange(seq_len), 0).astype(np.int32)
  target_segmentation = segmentation.copy()
  if "loss_mask" in piece:  # SFT: untrained targets leave the loss like padding (attention is unchanged)
    target_segmentation[:n] *= np.asarray(piece["loss_mask"], np.int32)
  return {
      "inputs": tokens_in,
      "inputs_position": position,
      "inputs_segmentation": segmentation,
      "targets": tokens_out,
      "targets_position": position.copy(),
      "targets_segmentation": target_segmentation,
  }


def rename_packed(packed: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """grain packing output -> MaxText batch keys, int32; a packed "loss_mask" (SFT) zeroes the untrained targets'
  segmentation, so they leave the loss while attention still sees every token of their segment."""
  out = {
      _GRAIN_TO_MAXTEXT[k]: np.asarray(v, np.int32)
      for k, v in packed.items()
      if k in _GRAIN_TO_MAXTEXT
  }
  if "loss_mask" in packed:
    out["targets_segmentation"] = out["targets_segmentation"] * np.asarray(packed["loss_mask"], np.int32)
  return out


def packing_efficiency(batch: Mapping[str, np.ndarray]) -> float:
  """Fraction of target positions that hold a real token (not padding)."""
  return float(np.mean(np.asarray(batch["targets_segmentation"]) != 0))
