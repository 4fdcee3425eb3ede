"""`python -m maxtext_like.data_inspect base.yml [key=value ...] [--rows N] [--batches K] [--split eval]`.

Shows the data exactly as the train step receives it, from the same
`make_iterator` the loop uses: for the first rows of the first batch, each
segment's text and token ids (for SFT and DPO records, the text with the
part that counts in the loss inside «»), and per position the input id, target id,
segment id, position and loss mask (1 where the target counts in the loss);
then packing efficiency and tokens per example over the first K batches.
Needs no devices: the batch is `--rows` rows of one process.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from maxtext_like.cli_common import HELP_FLAGS, print_help, run_entry_point


def loss_text(tok, targets, trained) -> str:
  """The targets' text with the runs that count in the loss inside «» (eos shown as <eos>)."""
  out, k = [], 0
  while k < len(targets):
    j = k
    while j < len(targets) and trained[j] == trained[k]:
      j += 1
    run = [int(t) for t in targets[k:j]]
    pieces, start = [], 0
    for e in [i for i, t in enumerate(run) if t == tok.eos_id] + [len(run)]:  # decode between eos ids
      pieces.append(tok.decode(run[start:e]) + ("<eos>" if e < len(run) else ""))
      start = e + 1
    text = "".join(pieces)
    out.append(f"«{text}»" if trained[k] else text)
    k = j
  return "".join(out)


def describe(cfg, *, rows: int = 2, batches: int = 8, split: str = "train", width: int = 24, out=None) -> dict:
  """Prints the first rows and the statistics (to `out`, default the current sys.stdout); returns the statistics."""
  out = sys.stdout if out is None else out
  from maxtext_like.data import packing_efficiency
  from maxtext_like.runtime.tokenizer import tokenizer_for
  from maxtext_like.training.data_source import make_iterator

  tok = tokenizer_for(cfg) if cfg.dataset.dataset_type != "synthetic" else None
  it = make_iterator(cfg, rows, split)
  seen = []
  for b in it:
    seen.append(b)
    if len(seen) >= batches:
      break
  if not seen:
    print(f"no batches: the {split} data yields nothing at this batch size", file=out)
    return {}
  first = seen[0]
  p = lambda *a: print(*a, file=out)  # noqa: E731
  p(f"dataset_type={cfg.dataset.dataset_type} split={split} seq_len={first['inputs'].shape[1]} rows/batch={rows} "
    f"packing={cfg.dataset.packing} ({cfg.dataset.grain_packing_type}) tokenizer={tok!r}")
  for r in range(min(rows, first["inputs"].shape[0])):
    seg = first["inputs_segmentation"][r]
    p(f"\n=== row {r}: {len(np.unique(seg[seg > 0]))} segment(s), {int((seg > 0).sum())} real tokens ===")
    for s in np.unique(seg[seg > 0]):
      idx = np.flatnonzero(seg == s)
      ids = [int(t) for t in first["inputs"][r][idx]] + [int(first["targets"][r][idx[-1]])]
      text = tok.decode(ids) if tok else "(synthetic)"
      p(f"  segment {s}: positions {idx[0]}..{idx[-1]}  text: {text[:200]!r}{'...' if len(text) > 200 else ''}")
      p(f"    ids: {ids[:width]}{' ...' if len(ids) > width else ''}")
      for prefix in ("", "rejected_") if "rejected_inputs" in first else ("",):  # DPO: the chosen row, then the rejected
        trained = first[prefix + "targets_segmentation"][r][idx] != 0
        if tok and not trained.all():  # SFT / DPO: which targets count in the loss
          side = prefix or ("chosen_" if "rejected_inputs" in first else "")
          p(f"    {side}loss on «...»: "
            f"{loss_text(tok, first[prefix + 'targets'][r][idx], trained)!r}")
    p("   t | input  target  seg  pos  loss")
    for t in range(min(width, len(seg))):
      p(f"  {t:2d} | {first['inputs'][r][t]:6d} {first['targets'][r][t]:6d} {seg[t]:4d} {first['inputs_position'][r][t]:4d}"
        f" {int(first['targets_segmentation'][r][t] != 0):5d}")
  eff = [packing_efficiency(b) for b in seen]
  real = np.concatenate([(b["targets_segmentation"] != 0).sum(1) for b in seen])
  segs = np.concatenate([[len(np.unique(s[s > 0])) for s in b["targets_segmentation"]] for b in seen])
  stats = dict(batches=len(seen), packing_efficiency=float(np.mean(eff)), tokens_per_example=float(real.mean()),
               segments_per_example=float(segs.mean()), tokens_per_segment=float(real.sum() / max(segs.sum(), 1)))
  p(f"\nover {len(seen)} batch(es): packing efficiency {stats['packing_efficiency']:.3f} (non-padding target positions), "
    f"{stats['tokens_per_example']:.1f} tokens/example, {stats['segments_per_example']:.2f} segments/example, "
    f"{stats['tokens_per_segment']:.1f} tokens/segment")
  return stats


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m maxtext_like.data_inspect", add_help=False)
  parser.add_argument("--rows", type=int, default=2, help="rows per batch to read and show")
  parser.add_argument("--batches", type=int, default=8, help="batches for the statistics")
  parser.add_argument("--split", choices=("train", "eval"), default="train")
  parser.add_argument("--width", type=int, default=24, help="positions shown per row")
  argv = sys.argv[1:] if argv is None else argv
  if any(a in HELP_FLAGS for a in argv):
    return print_help(f"{__doc__}\n{parser.format_help()}", "data_inspect")
  args, rest = parser.parse_known_args(argv)
  return run_entry_point("data_inspect", rest, lambda cfg: describe(cfg, rows=args.rows, batches=args.batches,
                                                                    split=args.split, width=args.width))


if __name__ == "__main__":
  sys.exit(main())
