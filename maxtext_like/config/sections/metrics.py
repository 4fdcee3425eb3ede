"""Metrics, TensorBoard, goodput and monitoring."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class MetricsSection(Section):
  """Metrics, TensorBoard, goodput and monitoring. (MaxText: Metrics, ManagedMLDiagnostics, Goodput, GcpMonitoring, Tensorboard.)"""

  section_name = "metrics"

  metrics_file: None | str = F('Local file to store scalar metrics for testing.')
  gcs_metrics: bool = F('If True, save metrics to GCS.')
  save_config_to_gcs: bool = F('If True, save config to GCS.')
  record_internal_nn_metrics: int = F('Record internal neural network metrics.')
  prometheus_port: int = F('Port for Prometheus metrics server. 0 disables it.')
  enable_checkpoint_cloud_logger: bool = F('Enables structured logging for checkpointing.')
  enable_tunix_perf_metrics: bool = F('Whether to enable Tunix-managed metrics measurement. The metrics will be uploaded to tensorboard.')
  managed_mldiagnostics: bool = F('Enable managed mldiagnostics.')
  managed_mldiagnostics_run_group: str = F('Name used to group multiple runs.')
  enable_goodput_recording: bool = F('Enable goodput recording.')
  monitor_goodput: bool = F('Monitor goodput.')
  goodput_upload_interval_seconds: int = F('Interval to upload goodput metrics.')
  enable_pathways_goodput: bool = F('Enable goodput monitoring for Pathways.')
  monitor_step_time_deviation: bool = F('Monitor step time deviation.')
  step_deviation_interval_seconds: int = F('Interval to check step time deviation.')
  enable_gcp_goodput_metrics: bool = F('Enable GCP goodput metrics.')
  enable_gcp_step_deviation_metrics: bool = F('Enable GCP step deviation metrics.')
  report_heartbeat_metric_for_gcp_monitoring: bool = F('Report heartbeat metric for GCP monitoring.')
  heartbeat_reporting_interval_in_seconds: int = F('Interval for heartbeat metric.')
  report_performance_metric_for_gcp_monitoring: bool = F('Report performance metric for GCP monitoring.')
  enable_tensorboard: bool = F('Enable Tensorboard logging.')
  use_vertex_tensorboard: bool = F('Set to True to have MaxText create (or reuse) the Vertex AI Tensorboard instance and Experiment and upload logs. Leave False if they are created outside MaxText and UPLOAD_DATA_TO_TENSORBOARD is set in the environment.')
  vertex_tensorboard_project: str | None = F('GCP project for Vertex AI Tensorboard.')
  vertex_tensorboard_region: str | None = F('Region for Vertex AI Tensorboard.')
