#!/usr/bin/env bash
# Print the XPK command for llama3-8b on 2 v5e-16 slices (FSDP within a slice, data parallel across slices).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m maxtext_like.launch xpk --num_hosts 4 --cluster "${CLUSTER:-my-cluster}" --device_type v5litepod-16 \
  --num_slices 2 --docker_image "${IMAGE:-maxtext_like:latest}" -- \
  base.yml run_name=llama3_8b_xpk model_name=llama3-8b hardware=tpu dtype=bfloat16 dcn_data_parallelism=2 \
  per_device_batch_size=2 max_target_length=8192 steps=10000 base_output_directory=gs://my-bucket/outputs
