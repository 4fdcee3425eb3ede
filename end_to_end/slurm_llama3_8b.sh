#!/usr/bin/env bash
# Print (and, with SUBMIT=1, submit) a 4-node SLURM job training llama3-8b with FSDP over all GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
script=$(.venv/bin/python -m maxtext_like.launch slurm --num_hosts 4 --gpus_per_node 8 -- \
  base.yml run_name=llama3_8b_fsdp model_name=llama3-8b hardware=gpu dtype=bfloat16 learning_rate=3e-4 \
  per_device_batch_size=2 max_target_length=8192 steps=10000 base_output_directory=/shared/outputs)
echo "$script"
[ "${SUBMIT:-0}" = 1 ] && echo "$script" | sbatch
