"""Peak RSS and wall time of `python -m maxtext_like.convert` on a synthetic checkpoint shaped like Llama-3-8B.

Writes a Hugging Face directory (config.json + sharded safetensors + index) with Llama-3-8B's dimensions
(hidden 4096, 32 query / 8 kv heads of 128, mlp 14336, vocab 128256, untied lm_head) but only `--layers`
decoder layers, then runs `to_maxtext` and `to_hf` back, each in its own subprocess, and reports the child's
peak RSS (`wait4` ru_maxrss, plus psutil polling for the anonymous / file-backed split) and wall time.

  .venv/bin/python benchmarks/convert_memory.py                     # 2 layers, bf16 file, weight_dtype=bfloat16
  .venv/bin/python benchmarks/convert_memory.py --dtype f32 --layers 4 --keep --workdir /tmp/cm
  .venv/bin/python benchmarks/convert_memory.py scan_layers=false   # extra key=value go to both conversions

Target (issue 4): peak RSS <= 2 x the largest tensor + 1 GiB. The writer streams each tensor from one small
random block, so this script itself stays at a few hundred MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import ml_dtypes
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GiB = 1024**3
D, N, K, H, F, V = 4096, 32, 8, 128, 14336, 128256  # Llama-3-8B


def llama3_8b_tensors(layers: int) -> list[tuple[str, tuple[int, ...]]]:
  t = [("model.embed_tokens.weight", (V, D))]
  for i in range(layers):
    p = f"model.layers.{i}."
    t += [(p + "input_layernorm.weight", (D,)), (p + "self_attn.q_proj.weight", (N * H, D)),
          (p + "self_attn.k_proj.weight", (K * H, D)), (p + "self_attn.v_proj.weight", (K * H, D)),
          (p + "self_attn.o_proj.weight", (D, N * H)), (p + "post_attention_layernorm.weight", (D,)),
          (p + "mlp.gate_proj.weight", (F, D)), (p + "mlp.up_proj.weight", (F, D)),
          (p + "mlp.down_proj.weight", (D, F))]
  return t + [("model.norm.weight", (D,)), ("lm_head.weight", (V, D))]


def hf_config(layers: int, dtype: str) -> dict:
  return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D, "intermediate_size": F,
          "num_attention_heads": N, "num_key_value_heads": K, "head_dim": H, "num_hidden_layers": layers,
          "vocab_size": V, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 8192,
          "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
          "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": dtype, "dtype": dtype}


def write_checkpoint(path: str, layers: int, dtype: str, shard_bytes: int) -> int:
  """Writes the synthetic checkpoint tensor by tensor, chunk by chunk; returns the largest tensor's bytes."""
  np_dtype, st_name = {"bfloat16": (ml_dtypes.bfloat16, "BF16"), "float32": (np.float32, "F32")}[dtype]
  item = np.dtype(np_dtype).itemsize
  block = (np.random.default_rng(0).standard_normal(1 << 22) * 0.02).astype(np_dtype)  # 4M values, reused
  shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
  size = 0
  for name, shape in llama3_8b_tensors(layers):
    n = int(np.prod(shape)) * item
    if shards[-1] and size + n > shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append((name, shape))
    size += n
  weight_map, total = {}, 0
  for s, tensors in enumerate(shards):
    fname = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
    header, off = {}, 0
    for name, shape in tensors:
      n = int(np.prod(shape)) * item
      header[name] = {"dtype": st_name, "shape": list(shape), "data_offsets": [off, off + n]}
      off += n
      weight_map[name] = fname
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(os.path.join(path, fname), "wb") as f:
      f.write(struct.pack("<Q", len(blob)))
      f.write(blob)
      for k, (name, shape) in enumerate(tensors):
        left = int(np.prod(shape))
        start = (k * 7919) % block.size
        while left:
          m = min(left, block.size - start)
          f.write(block[start:start + m].tobytes())
          left -= m
          start = 0
    total += off
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf_config(layers, dtype), f, indent=2)
  return max(int(np.prod(s)) for _, s in llama3_8b_tensors(layers)) * item


def run_measured(cmd: list[str]) -> dict:
  """Runs cmd; peak RSS from wait4 (whole lifetime) and psutil polling (anonymous vs file-backed split)."""
  import psutil
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  t0 = time.perf_counter()
  p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  peak = {"rss": 0, "anon": 0, "file": 0}
  done = threading.Event()

  def poll():
    proc = psutil.Process(p.pid)
    while not done.is_set():
      try:
        m = proc.memory_info()
      except psutil.Error:
        return
      peak["rss"] = max(peak["rss"], m.rss)
      peak["anon"] = max(peak["anon"], m.rss - m.shared)
      peak["file"] = max(peak["file"], m.shared)
      time.sleep(0.02)

  th = threading.Thread(target=poll, daemon=True)
  th.start()
  out, err = [], []
  readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
             for s, b in ((p.stdout, out), (p.stderr, err))]
  for r in readers:
    r.start()
  _, status, ru = os.wait4(p.pid, 0)
  wall = time.perf_counter() - t0
  done.set()
  p.returncode = os.waitstatus_to_exitcode(status)
  for r in readers:
    r.join()
  th.join()
  if p.returncode:
    sys.stderr.write(b"".join(err).decode(errors="replace")[-4000:])
    raise SystemExit(f"{' '.join(cmd)} failed with exit code {p.returncode}")
  for line in b"".join(err).decode(errors="replace").splitlines():
    if "peak RSS after" in line:  # MAXTEXT_LIKE_CONVERT_DEBUG=1: the converter's phase marks
      print(line)
  return {"maxrss": ru.ru_maxrss * 1024, "wall": wall, **{f"poll_{k}": v for k, v in peak.items()}}


def dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--layers", type=int, default=2)
  ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16", help="dtype of the synthetic HF checkpoint")
  ap.add_argument("--weight_dtype", default=None, help="our weight_dtype (default: same as --dtype)")
  ap.add_argument("--shard_mb", type=float, default=2000, help="HF shard size of the synthetic checkpoint")
  ap.add_argument("--workdir", default=None, help="default: a fresh temp dir (removed unless --keep)")
  ap.add_argument("--keep", action="store_true")
  ap.add_argument("--skip-to-hf", action="store_true")
  ap.add_argument("--json", action="store_true", help="also print one machine-readable line")
  args, extra = ap.parse_known_args()
  dtype = {"bf16": "bfloat16", "f32": "float32"}[args.dtype]
  weight_dtype = args.weight_dtype or dtype
  work = args.workdir or tempfile.mkdtemp(prefix="convert_memory.")
  hf, ours, back = (os.path.join(work, n) for n in ("hf", "ours", "hf_back"))
  for d in (ours, back, hf):
    shutil.rmtree(d, ignore_errors=True)
  os.makedirs(hf)
  try:
    t0 = time.perf_counter()
    largest_file = write_checkpoint(hf, args.layers, dtype, int(args.shard_mb * 1024**2))
    t_write = time.perf_counter() - t0
    largest_ours = largest_file // np.dtype(dtype).itemsize * np.dtype(weight_dtype).itemsize
    largest = max(largest_file, largest_ours)
    py = [sys.executable, "-m", "maxtext_like.convert"]
    conf = [f"weight_dtype={weight_dtype}", *extra]
    rows = [("to_maxtext", run_measured(py + ["to_maxtext", "--hf_path", hf, "--output", ours, *conf]))]
    if not args.skip_to_hf:
      rows.append(("to_hf", run_measured(py + ["to_hf", "--output", back, f"model_name={ours}/model.yml",
                                                f"load_parameters_path={ours}", *conf])))
    target = 2 * largest + GiB
    print(f"synthetic Llama-3-8B-shaped checkpoint: {args.layers} layers, {dtype} file "
          f"({dir_bytes(hf) / GiB:.2f} GiB, written in {t_write:.1f} s), weight_dtype={weight_dtype}, "
          f"extra={extra or '-'}")
    print(f"largest tensor: {largest_file / GiB:.2f} GiB in the file, {largest_ours / GiB:.2f} GiB as {weight_dtype}; "
          f"target peak RSS <= 2 x {largest / GiB:.2f} + 1 = {target / GiB:.2f} GiB")
    print(f"{'step':<11}{'peak RSS':>10}{'anon':>8}{'file':>8}{'wall s':>8}{'output GiB':>12}  target")
    for name, r in rows:
      out_dir = ours if name == "to_maxtext" else back
      ok = "met" if r["maxrss"] <= target else "MISSED"
      print(f"{name:<11}{r['maxrss'] / GiB:>10.2f}{r['poll_anon'] / GiB:>8.2f}{r['poll_file'] / GiB:>8.2f}"
            f"{r['wall']:>8.1f}{dir_bytes(out_dir) / GiB:>12.2f}  {ok}")
    print("(peak RSS: wait4 ru_maxrss of the child; anon / file: peaks of RSS - shared and shared, psutil "
          "polled every 20 ms)")
    if args.json:
      print(json.dumps({"layers": args.layers, "dtype": dtype, "weight_dtype": weight_dtype, "extra": extra,
                        "largest_tensor_bytes": largest, "target_bytes": target, **{n: r for n, r in rows}}))
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
