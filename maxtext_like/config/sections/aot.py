"""Ahead-of-time compilation."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class AotSection(Section):
  """Ahead-of-time compilation. (MaxText: AOT.)"""

  section_name = "aot"

  compiled_trainstep_file: str = F('Name of saved serialized compiled train_step.')
  compile_topology: str = F("Target hardware version, e.g. 'v5e-256'.")
  compile_topology_num_slices: int = F('Number of target slices.')
  compile_topology_num_devices: int = F("Devices per slice to compile for on this host's backend (fake CPU devices for a dry run); 0: the devices present. maxtext_like addition.")
  compile_device_memory_gb: NonNegFloat = F('Per-device memory to check the compiled step against (e.g. 16 for a v5e chip); 0: no check. maxtext_like addition.')
