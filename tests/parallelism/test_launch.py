"""Launch recipes are tested by content: no cluster is reachable here."""

from maxtext_like.launch import main


def test_slurm_script_sets_up_jax_distributed(capsys):
  assert main(["slurm", "--num_hosts", "4", "--gpus_per_node", "8", "--", "base.yml", "run_name=r1", "model_name=llama3-8b"]) == 0
  out = capsys.readouterr().out
  assert "#SBATCH --nodes=4" in out and "#SBATCH --ntasks-per-node=1" in out
  assert "JAX_COORDINATOR_ADDRESS" in out and 'JAX_NUM_PROCESSES="$SLURM_NNODES"' in out and "JAX_PROCESS_ID=$SLURM_PROCID" in out
  assert "python -m maxtext_like.train base.yml run_name=r1 model_name=llama3-8b" in out


def test_xpk_command(capsys):
  assert main(["xpk", "--num_hosts", "4", "--cluster", "c1", "--device_type", "v5litepod-16", "--num_slices", "2", "--",
               "base.yml", "run_name=r1", "dcn_data_parallelism=2"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("xpk workload create") and "--cluster c1" in out and "--num-slices 2" in out
  assert "maxtext_like.train base.yml run_name=r1 dcn_data_parallelism=2" in out


def test_bad_config_or_missing_run_name_exits_2(capsys):
  assert main(["slurm", "--num_hosts", "2", "--", "base.yml", "stepz=1"]) == 2
  assert main(["slurm", "--num_hosts", "2", "--", "base.yml"]) == 2
  assert "run_name" in capsys.readouterr().err
