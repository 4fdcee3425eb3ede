#!/usr/bin/env bash
# Train the default tiny model on the embedded corpus, resume it, and decode from it, on this machine's CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m maxtext_like.train base.yml run_name=e2e_demo steps=200 checkpoint_period=100
$PY -m maxtext_like.train base.yml run_name=e2e_demo steps=300 checkpoint_period=100   # resumes at 200
$PY -m maxtext_like.decode base.yml run_name=e2e_demo prompt="It is a truth universally acknowledged|||Elizabeth was"
