"""MoE config keys: supported ones accepted, the rest still refused; cross-field rules (each fires with its own
message); the config becomes a MoeSpec for MoE blocks only."""

import pytest

from maxtext_like.config import ConfigError, load_config
from maxtext_like.runtime.model_spec import model_spec

MIXTRAL = ["override_model_config=true", "decoder_block=mixtral", "num_experts=8", "num_experts_per_tok=2"]


def problems(*argv):
  with pytest.raises(ConfigError) as e:
    load_config(["base.yml", "override_model_config=true", *argv], env={})
  return e.value.problems


@pytest.mark.parametrize("argv,key,fragment", [
    (["num_experts=8"], "num_experts", "has no MoE layers"),
    (["load_balance_loss_weight=0.01"], "load_balance_loss_weight", "has no MoE layers"),
    ([*MIXTRAL, "capacity_factor=1.25"], "capacity_factor", "set sparse_matmul=false"),
    ([*MIXTRAL, "n_routing_groups=3", "topk_routing_group=1"], "n_routing_groups", "must divide num_experts"),
    ([*MIXTRAL, "n_routing_groups=4", "topk_routing_group=5"], "topk_routing_group", "must be in [1, n_routing_groups=4]"),
    ([*MIXTRAL, "routed_bias_update_rate=0.001"], "routed_bias_update_rate", "needs routed_bias=true"),
    ([*MIXTRAL, "routed_score_func=relu"], "routed_score_func", "unknown scoring function"),
    ([*MIXTRAL, "first_num_dense_layers=99"], "first_num_dense_layers", "exceeds base_num_decoder_layers"),
    ([*MIXTRAL, "base_num_decoder_layers=4", "interleave_moe_layer_step=3"], "interleave_moe_layer_step", "set scan_layers=false"),
    ([*MIXTRAL, "use_ring_of_experts=true"], "use_ring_of_experts", "not supported yet"),
])
def test_moe_rule_fires(argv, key, fragment):
  found = [p for p in problems(*argv) if p.key == key]
  assert found and any(fragment in p.render() for p in found), [p.render() for p in problems(*argv)]


def test_supported_keys_reach_the_spec():
  cfg = load_config(["base.yml", *MIXTRAL, "sparse_matmul=false", "capacity_factor=1.25", "routed_score_func=sigmoid",
                     "routed_bias=true", "routed_bias_update_rate=0.001", "n_routing_groups=4", "topk_routing_group=2",
                     "shared_experts=1", "norm_topk_prob=true", "routed_scaling_factor=2.5", "load_balance_loss_weight=0.01",
                     "base_moe_mlp_dim=512", "use_random_routing=true", "float32_gate_logits=true"], env={})
  m = model_spec(cfg).moe
  assert (m.num_experts, m.num_experts_per_tok, m.mlp_dim, m.capacity_factor, m.n_routing_groups) == (8, 2, 512, 1.25, 4)
  assert m.routed_bias and m.shared_experts == 1 and m.routed_scaling_factor == 2.5 and m.use_random_routing
  assert model_spec(load_config(["base.yml"], env={})).moe is None


def test_presets_load():
  for name in ("mixtral-8x7b", "mixtral-8x22b", "qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3-480b-a35b"):
    m = model_spec(load_config(["base.yml", f"model_name={name}"], env={})).moe
    assert m.num_experts in (8, 128, 160) and m.norm_topk_prob


def test_train_flops_count_active_experts():
  from maxtext_like.training.flops import train_flops_per_step
  cfg = load_config(["base.yml", *MIXTRAL, "base_mlp_dim=1024", "base_moe_mlp_dim=512"], env={})
  spec = model_spec(cfg)
  dense = train_flops_per_step(spec.replace(moe=None, decoder_block="llama2", mlp_dim=1024), 1, 128)
  moe = train_flops_per_step(spec, 1, 128)
  router = 3 * 2 * 128 * spec.emb_dim * 8 * spec.num_decoder_layers
  assert moe == pytest.approx(dense + router)  # top-2 of F=512 == one dense MLP of F=1024
