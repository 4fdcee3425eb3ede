"""`python -m maxtext_like.decode base.yml run_name=x prompt="..." [key=value ...]`: generate from a run's checkpoint.

Several prompts: separate them with `|||` in `prompt`; they are decoded as one batch.
"""

from __future__ import annotations

import sys

from maxtext_like.cli_common import run_entry_point

PROMPT_SEPARATOR = "|||"


def main(argv: list[str] | None = None) -> int:
  def body(cfg):
    from maxtext_like.api import generate
    prompts = [p.strip() for p in cfg.inference.prompt.split(PROMPT_SEPARATOR)]
    for prompt, text in zip(prompts, generate(cfg, prompts, verbose=True)):
      print(f"prompt: {prompt}\ncontinuation: {text}\n", flush=True)
  return run_entry_point("decode", sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
  sys.exit(main())
