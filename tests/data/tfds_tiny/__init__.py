"""A tiny TFDS builder (a package, as TFDS requires), prepared as array_record files without TensorFlow."""

import tensorflow_datasets as tfds


def doc(split: str, i: int) -> str:
  return f"tfds {split} doc {i}: " + "word " * (i % 9)


class TinyText(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples("train", 24), "validation": self._generate_examples("validation", 6)}

  def _generate_examples(self, split, n):
    for i in range(n):
      yield i, {"text": doc(split, i)}


def prepare(data_dir: str) -> None:
  TinyText(data_dir=data_dir, file_format="array_record").download_and_prepare()
