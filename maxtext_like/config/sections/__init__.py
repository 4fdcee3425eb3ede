"""Grouped, frozen config sections. Each flat key of base.yml lives in exactly one section under its flat name."""

from maxtext_like.config.sections.run import RunSection
from maxtext_like.config.sections.checkpointing import CheckpointingSection
from maxtext_like.config.sections.dtypes import DTypesSection
from maxtext_like.config.sections.quantization import QuantizationSection
from maxtext_like.config.sections.model import ModelSection
from maxtext_like.config.sections.attention import AttentionSection
from maxtext_like.config.sections.moe import MoESection
from maxtext_like.config.sections.mesh import MeshSection
from maxtext_like.config.sections.dcn import DcnSection
from maxtext_like.config.sections.ici import IciSection
from maxtext_like.config.sections.pipeline import PipelineSection
from maxtext_like.config.sections.remat import RematSection
from maxtext_like.config.sections.tokenizer import TokenizerSection
from maxtext_like.config.sections.dataset import DatasetSection
from maxtext_like.config.sections.finetune import FinetuneSection
from maxtext_like.config.sections.training import TrainingSection
from maxtext_like.config.sections.optimizer import OptimizerSection
from maxtext_like.config.sections.rope import RopeSection
from maxtext_like.config.sections.inference import InferenceSection
from maxtext_like.config.sections.aot import AotSection
from maxtext_like.config.sections.debug import DebugSection
from maxtext_like.config.sections.metrics import MetricsSection
from maxtext_like.config.sections.multimodal import MultimodalSection
from maxtext_like.config.sections.rl import RLSection

SECTIONS = {
    "run": RunSection,
    "checkpointing": CheckpointingSection,
    "dtypes": DTypesSection,
    "quantization": QuantizationSection,
    "model": ModelSection,
    "attention": AttentionSection,
    "moe": MoESection,
    "mesh": MeshSection,
    "dcn": DcnSection,
    "ici": IciSection,
    "pipeline": PipelineSection,
    "remat": RematSection,
    "tokenizer": TokenizerSection,
    "dataset": DatasetSection,
    "finetune": FinetuneSection,
    "training": TrainingSection,
    "optimizer": OptimizerSection,
    "rope": RopeSection,
    "inference": InferenceSection,
    "aot": AotSection,
    "debug": DebugSection,
    "metrics": MetricsSection,
    "multimodal": MultimodalSection,
    "rl": RLSection,
}
