"""`python -m maxtext_like.train base.yml run_name=x [key=value ...]`: train from a config. Kept short on purpose."""

from __future__ import annotations

import sys

from maxtext_like.cli_common import run_entry_point


def main(argv: list[str] | None = None) -> int:
  def body(cfg):
    from maxtext_like.training import distributed
    from maxtext_like.training.loop import train
    distributed.initialize(cfg)
    train(cfg)
  return run_entry_point("train", sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
  sys.exit(main())
