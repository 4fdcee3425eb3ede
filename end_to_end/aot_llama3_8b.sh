#!/usr/bin/env bash
# Will llama3-8b with FSDP over 64 devices fit 16 GiB per device? Compiles on this CPU with 64 fake devices.
set -euo pipefail
cd "$(dirname "$0")/.."
/usr/bin/time -v .venv/bin/python -m maxtext_like.train_compile base.yml model_name=llama3-8b \
  compile_topology_num_devices=64 per_device_batch_size=1 max_target_length=2048 compile_device_memory_gb=16 \
  dataset_type=synthetic 2>&1 | grep -E '^\||^-|To fit|Maximum resident|Elapsed'
