"""The SFT/DPO config rule: each problem fires with its key and message (exit 2 at the entry points)."""

import pytest

from maxtext_like.config import ConfigError, load_config


@pytest.mark.parametrize("argv,key,fragment", [
    (["use_dpo=true"], "packing", "must be false with use_dpo"),
    (["use_dpo=true", "use_sft=true"], "use_dpo", "cannot both be true"),
    (["use_sft=true", "dataset_type=synthetic"], "dataset_type", "reads records from embedded or hf"),
    (["use_sft=true", "dataset_type=hf", "hf_path=json", "train_data_columns=[a,b,c,d]"], "train_data_columns", "[messages]"),
    (["use_dpo=true", "packing=false", "dataset_type=hf", "hf_path=json", "train_data_columns=[chosen]"],
     "train_data_columns", "[prompt, chosen, rejected]"),
    (["use_dpo=true", "packing=false", "dpo_label_smoothing=0.5"], "dpo_label_smoothing", "[0, 0.5)"),
    (["use_dpo=true", "packing=false", "dpo_beta=0"], "dpo_beta", "must be > 0"),
    (["use_sft=true", "dataset_type=hf", "hf_path=json", "hf_streaming=true"], "hf_streaming", "not supported with use_sft"),
    (["use_dpo=true", "packing=false", "expansion_factor_real_data=2"], "expansion_factor_real_data", "use_dpo"),
    (["train_data_columns=[prompt,completion]"], "train_data_columns", "for use_sft / use_dpo"),
])
def test_finetune_rule_fires(argv, key, fragment):
  with pytest.raises(ConfigError) as e:
    load_config(["base.yml", *argv], env={})
  ps = [p for p in e.value.problems if p.key == key]
  assert any(fragment in p.message for p in ps), [p.message for p in e.value.problems]


def test_finetune_configs_load():
  load_config(["base.yml", "use_sft=true"], env={})  # the shipped chat set's columns stand in for [text]
  load_config(["base.yml", "use_dpo=true", "packing=false", "dpo_beta=0.5", "dpo_label_smoothing=0.1"], env={})
  load_config(["base.yml", "use_sft=true", "dataset_type=hf", "hf_path=json", "train_data_columns=[instruction,input,output]",
               "eval_data_columns=[instruction,input,output]"], env={})


def test_maxtext_nested_dpo_block(tmp_path):
  """MaxText's dpo.yml groups the keys in a `dpo:` block (algo, dpo_beta, ...); a file or dotted CLI keys set them."""
  path = tmp_path / "dpo.yml"
  path.write_text('base_config: "base.yml"\nuse_dpo: true\ndpo:\n  algo: orpo\n  orpo_lambda: 0.2\n  dpo_label_smoothing: 0.0\n'
                  '  dpo_beta: 0.3\n  max_prompt_length: null\npacking: false\n')
  cfg = load_config([str(path)], env={})
  assert (cfg.finetune.dpo_algo, cfg.finetune.orpo_lambda, cfg.finetune.dpo_beta) == ("orpo", 0.2, 0.3)
  assert cfg.source("dpo_algo").endswith("dpo.yml:4")
  cfg = load_config(["base.yml", "use_dpo=true", "packing=false", "dpo.algo=orpo", "dpo.dpo_beta=0.5"], env={})
  assert (cfg.finetune.dpo_algo, cfg.finetune.dpo_beta) == ("orpo", 0.5)
