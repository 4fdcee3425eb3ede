"""Rebuilds the embedded default corpus and tokenizer in `maxtext_like/assets/`.

    /tmp/v311/bin/python tools/make_embedded_assets.py [--deb PATH.deb]

Source: Jane Austen's six completed novels (public domain; Project Gutenberg
transcriptions) as packaged by the CRAN package `janeaustenr` (MIT, Julia
Silge), shipped by Debian as `r-cran-janeaustenr`. The script reads the
package's R data directly (no R needed): from an installed copy, from `--deb`,
or from `apt-get download r-cran-janeaustenr`.

Outputs (deterministic for a given .deb and sentencepiece version):
  maxtext_like/assets/corpus/{train,eval}.jsonl.gz  one JSON object per line:
      {"text": <one chapter>, "book": <name>, "chapter": <1-based int>}
  maxtext_like/assets/tokenizer/embedded_sp4096.model
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import sentencepiece as spm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import rdata_lazyload  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
ASSETS = REPO / "maxtext_like" / "assets"
_PKG_DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
_BOOKS = (
    "sensesensibility", "prideprejudice", "mansfieldpark", "emma",
    "northangerabbey", "persuasion",
)
_CHAPTER_RE = re.compile(r"^(CHAPTER|Chapter)\s+[IVXLC0-9]+\.?\s*$")
_VOLUME_RE = re.compile(r"^VOLUME\s+[IVX]+\s*$")
_END_MARKERS = {"THE END", "FINIS", "A NOTE ON THE TEXT"}
EVAL_EVERY = 25  # every 25th chapter (in corpus order) is held out for eval.

VOCAB_SIZE = 4096
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def locate_rdata(deb: str | None, workdir: pathlib.Path) -> pathlib.Path:
  """Finds the janeaustenr R data (installed, given .deb, or apt download)."""
  installed = pathlib.Path("/") / _PKG_DATA
  if deb is None and installed.with_suffix(".rdb").exists():
    return installed
  if deb is None:
    subprocess.run(
        ["apt-get", "download", "r-cran-janeaustenr"], cwd=workdir, check=True
    )
    deb = str(next(workdir.glob("r-cran-janeaustenr_*.deb")))
  subprocess.run(["dpkg-deb", "-x", deb, str(workdir / "root")], check=True)
  return workdir / "root" / _PKG_DATA


def _paragraphs(lines: list[str]) -> list[str]:
  """Blank-line separated paragraphs, reflowed to one line each."""
  paras, cur = [], []
  for line in lines + [""]:
    if line.strip():
      cur.append(line.strip())
    elif cur:
      paras.append(" ".join(cur))
      cur = []
  # Gutenberg marks italics with underscores; keep only the words.
  return [re.sub(r"\s+", " ", p.replace("_", "")).strip() for p in paras]


def split_chapters(lines: list[str]) -> list[str]:
  """Returns the chapters of one novel as plain text (paragraphs joined by \\n).

  Front matter before the first chapter heading, volume headings, chapter
  headings and everything from an end marker ("THE END", ...) on are dropped.
  """
  chapters: list[list[str]] = []
  for line in lines:
    if _CHAPTER_RE.match(line):
      chapters.append([])
    elif chapters and not _VOLUME_RE.match(line):
      chapters[-1].append(line)
  out = []
  for chapter_lines in chapters:
    paras = _paragraphs(chapter_lines)
    for i, p in enumerate(paras):
      if p.rstrip(".").upper() in _END_MARKERS:
        paras = paras[:i]
        break
    if paras:
      out.append("\n".join(paras))
  return out


def build_documents(novels: dict[str, list[str]]) -> list[dict]:
  docs = []
  for book in _BOOKS:
    lines = [line or "" for line in novels[book]]
    for i, text in enumerate(split_chapters(lines)):
      docs.append({"text": text, "book": book, "chapter": i + 1})
  return docs


def write_jsonl_gz(path: pathlib.Path, docs: list[dict]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  # mtime=0 and no file name in the header: byte-identical rebuilds.
  with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as f:
    for d in docs:
      f.write((json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8"))
  path.write_bytes(buf.getvalue())


def train_tokenizer(train_docs: list[dict], model_path: pathlib.Path) -> None:
  """Trains the byte-fallback BPE sentencepiece model on train paragraphs."""
  model_path.parent.mkdir(parents=True, exist_ok=True)
  paragraphs = [p for d in train_docs for p in d["text"].split("\n")]
  spm.set_random_generator_seed(0)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(paragraphs),
      model_writer=model,
      model_type="bpe",
      vocab_size=VOCAB_SIZE,
      character_coverage=1.0,
      byte_fallback=True,
      split_digits=True,
      # Identity normalisation keeps decode(encode(text)) == text, newlines
      # included ("\n" is a user-defined piece; SP otherwise drops it).
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      user_defined_symbols=["\n"],
      pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
      pad_piece="<pad>", bos_piece="<s>", eos_piece="</s>", unk_piece="<unk>",
      max_sentence_length=1 << 16,
      num_threads=1,
      minloglevel=2,
  )
  model_path.write_bytes(model.getvalue())


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--deb", help="path to r-cran-janeaustenr_*.deb")
  parser.add_argument("--out", default=str(ASSETS), help="assets directory")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  with tempfile.TemporaryDirectory() as tmp:
    rdata = locate_rdata(args.deb, pathlib.Path(tmp))
    novels = rdata_lazyload.read_lazyload_db(rdata)
  docs = build_documents(novels)
  train = [d for i, d in enumerate(docs) if i % EVAL_EVERY != EVAL_EVERY - 1]
  evals = [d for i, d in enumerate(docs) if i % EVAL_EVERY == EVAL_EVERY - 1]
  write_jsonl_gz(out / "corpus" / "train.jsonl.gz", train)
  write_jsonl_gz(out / "corpus" / "eval.jsonl.gz", evals)
  train_tokenizer(train, out / "tokenizer" / "embedded_sp4096.model")
  for name, split in (("train", train), ("eval", evals)):
    chars = sum(len(d["text"]) for d in split)
    print(f"{name}: {len(split)} chapters, {chars:,} characters")


if __name__ == "__main__":
  main()
