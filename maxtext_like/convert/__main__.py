"""`python -m maxtext_like.convert {to_maxtext,to_hf,merge_lora,lora_to_hf,quantize} ...`; bad input -> one paragraph on stderr, exit 2."""

from __future__ import annotations

import os
import sys

from maxtext_like.cli_common import HELP_FLAGS, print_help

USAGE = """usage:
  python -m maxtext_like.convert to_maxtext --hf_path DIR --output DIR [base.yml] [model_name=NAME] [k=v ...]
  python -m maxtext_like.convert to_hf --output DIR [--max_shard_mb N] [base.yml] model_name=NAME load_parameters_path=DIR [k=v ...]
  python -m maxtext_like.convert merge_lora --output DIR [base.yml] load_parameters_path=BASE (lora_restore_path=DIR | hf_lora_adapter_path=DIR) enable_lora=true lora_rank=R lora_alpha=A [k=v ...]
  python -m maxtext_like.convert lora_to_hf --output DIR [base.yml] lora_restore_path=DIR enable_lora=true lora_rank=R lora_alpha=A [k=v ...]
  python -m maxtext_like.convert quantize [base.yml] quantization=SCHEME load_parameters_path=DIR save_quantized_params_path=DIR [k=v ...]"""


def parse(argv: list[str]) -> tuple[str, dict[str, str], list[str]]:
  """(command, --options, remaining config argv)."""
  if not argv or argv[0] not in ("to_maxtext", "to_hf", "merge_lora", "lora_to_hf", "quantize"):
    raise SystemExit(USAGE)
  opts, rest, i = {}, [], 1
  while i < len(argv):
    a = argv[i]
    if a.startswith("--"):
      name, eq, value = a[2:].partition("=")
      if not eq:
        if i + 1 >= len(argv):
          raise SystemExit(f"option --{name} needs a value\n{USAGE}")
        value, i = argv[i + 1], i + 1
      opts[name] = value
    else:
      rest.append(a)
    i += 1
  allowed = {"to_maxtext": {"hf_path", "output"}, "to_hf": {"output", "max_shard_mb"}, "merge_lora": {"output"},
             "lora_to_hf": {"output"}, "quantize": set()}[argv[0]]
  unknown = set(opts) - allowed
  missing = {"hf_path", "output"} & allowed - set(opts)
  if unknown or missing:
    raise SystemExit(f"{'unknown options ' + str(sorted(unknown)) if unknown else ''}"
                     f"{' missing options ' + str(sorted(missing)) if missing else ''}\n{USAGE}")
  return argv[0], opts, rest


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if any(a in HELP_FLAGS for a in argv):
    return print_help(f"{__doc__}\n\n{USAGE}", "convert")
  try:
    command, opts, rest = parse(argv)
  except SystemExit as e:
    print(f"convert: {e}", file=sys.stderr)
    return 2
  from maxtext_like.convert import ConvertError, to_hf, to_maxtext
  from maxtext_like.models.registry import ModelSpecError
  from maxtext_like.runtime.checkpoints import CheckpointError
  try:
    if command == "to_maxtext":
      out = to_maxtext(opts["hf_path"], opts["output"], rest)
    elif command == "quantize":
      from maxtext_like.convert.quantize import quantize
      out = quantize(rest)
    elif command in ("merge_lora", "lora_to_hf"):
      from maxtext_like.convert import lora
      out = getattr(lora, command)(opts["output"], rest)
    else:
      kw = {"max_shard_bytes": int(float(opts["max_shard_mb"]) * 1024**2)} if "max_shard_mb" in opts else {}
      out = to_hf(opts["output"], rest, **kw)
  except (ConvertError, FileNotFoundError, CheckpointError, ModelSpecError) as e:
    print(f"convert {command}: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(out)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
