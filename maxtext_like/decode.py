"""`python -m maxtext_like.decode base.yml run_name=x prompt="..." [key=value ...]`: generate from a run's checkpoint.

Several prompts: separate them with `|||` in `prompt`; they share the engine's slots (continuous batching).
`return_log_prob=true` also prints each generated token's log-probability; `use_chat_template=true` sends each prompt
as a user message through the model's chat template (`chat_template`, `chat_template_path`, or the Hugging Face
tokenizer's own).
"""

from __future__ import annotations

import sys

from maxtext_like.cli_common import run_entry_point

PROMPT_SEPARATOR = "|||"


def main(argv: list[str] | None = None) -> int:
  def body(cfg):
    from maxtext_like.api import generate
    prompts = [p.strip() for p in cfg.inference.prompt.split(PROMPT_SEPARATOR)]
    want = cfg.inference.return_log_prob
    for prompt, out in zip(prompts, generate(cfg, prompts, verbose=True, with_log_probs=want)):
      text, logps = out if want else (out, None)
      print(f"prompt: {prompt}\ncontinuation: {text}", flush=True)
      if logps is not None:
        print(f"log_probs: {[round(x, 4) for x in logps]} (sum {sum(logps):.4f})", flush=True)
      print(flush=True)
  return run_entry_point("decode", sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
  sys.exit(main())
