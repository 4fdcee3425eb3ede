"""SFT conversations and DPO preference pairs -> token ids with a per-token loss mask.

Record formats; `train_data_columns` names the columns, in this order:

    SFT  1 column    a conversation: [{"role": system|user|assistant|tool, "content": str}, ...]
         2 columns   prompt, completion (question, answer, ...): text, or the prompt as a list of messages
         3 columns   instruction, input, output (Alpaca): the user turn is the instruction, then a blank line
                     and the input when there is one
    DPO  2 columns   chosen, rejected: texts or conversations sharing their start (that start is the prompt)
         3 columns   prompt, chosen, rejected

With `use_chat_template=true` every record becomes messages rendered by the chat template (`serving.chat`: the
config's `chat_template` / `chat_template_path`, or the Hugging Face tokenizer's own). Without it, text records are
`prompt + completion` tokenized as plain text with the configured bos/eos; conversations need a template.

The mask marks the tokens that count in the loss: with `completion_only`, the assistant turns only (every one of
them, each up to and including what the template writes to end the turn, e.g. `<|im_end|>`); else every token.
Spans are found on the rendered text (render the conversation up to an assistant turn with the generation prompt,
then with that turn: the difference is the turn), and mapped to tokens by tokenizing the text up to each span edge:
the ids are exactly those of tokenizing the whole rendered text at once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import numpy as np

from maxtext_like.data import documents
from maxtext_like.data.errors import DataError
from maxtext_like.data.tokenizers import Tokenizer

ROLES = ("system", "user", "assistant", "tool")


@dataclasses.dataclass(frozen=True)
class Encoded:
  """One sequence: ids [n] and loss mask [n] (1: the model is trained to predict this token)."""
  ids: np.ndarray
  mask: np.ndarray


# ---- sources of rows (a dict of the configured columns per row) ----
class JsonRows:
  """Rows of local .jsonl/.json files (optionally .gz), read into memory; every row must have every column."""

  def __init__(self, files: Sequence[str] | str, columns: Sequence[str]):
    self._args = (files, tuple(columns))
    self.files, self.columns = documents.expand_files(files), tuple(columns)
    self._rows, self._where = [], []
    for path in self.files:
      with documents._open_text(path) as f:  # pylint: disable=protected-access
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
      if not lines:
        raise DataError(f"{path}: empty data file (0 records)")
      for n, line in lines:
        try:
          record = json.loads(line)
        except ValueError as e:
          raise DataError(f"{path}:{n}: not a JSON object ({e})") from None
        missing = [c for c in self.columns if not isinstance(record, dict) or c not in record]
        if missing:
          fields = sorted(record) if isinstance(record, dict) else type(record).__name__
          raise DataError(f"{path}:{n}: no field(s) {missing} (train_data_columns/eval_data_columns={list(self.columns)}); "
                          f"the record has {fields}")
        self._rows.append({c: record[c] for c in self.columns})
        self._where.append(f"{path}:{n}")

  def __reduce__(self):
    return (type(self), self._args)

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, i: int) -> dict:
    return self._rows[i]

  def where(self, i: int) -> str:
    return self._where[i]


class HFRows:
  """The configured columns of a Hugging Face `datasets.Dataset`."""

  def __init__(self, dataset, columns: Sequence[str], name: str):
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
      raise DataError(f"{name}: no column(s) {missing} (train_data_columns/eval_data_columns={list(columns)}); "
                      f"columns are {dataset.column_names}")
    if len(dataset) == 0:
      raise DataError(f"{name}: the dataset split is empty")
    self._ds, self.columns, self.name = dataset.select_columns(list(columns)), tuple(columns), name

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, i: int) -> dict:
    return dict(self._ds[int(i)])

  def where(self, i: int) -> str:
    return f"{self.name} row {i}"


# ---- records -> messages or (prompt, completion) text ----
def _messages(value: Any, where: str, column: str) -> list[dict]:
  if not isinstance(value, (list, tuple)) or not value:
    raise DataError(f"{where}: column {column!r} must be a non-empty list of messages "
                    f"({{'role': one of {list(ROLES)}, 'content': text}}), got {type(value).__name__}")
  out = []
  for k, m in enumerate(value):
    if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
      raise DataError(f"{where}: column {column!r} message {k} must be {{'role': one of {list(ROLES)}, 'content': text}}; "
                      f"got {str(m)[:120]}")
    out.append({**m})
  return out


def _text(value: Any, where: str, column: str) -> str:
  if not isinstance(value, str):
    raise DataError(f"{where}: column {column!r} must be text, got {type(value).__name__}")
  return value


def _is_messages(value: Any) -> bool:
  return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], dict)


def sft_example(record: dict, columns: Sequence[str], where: str) -> list[dict] | tuple[str, str]:
  """A row -> its messages (conversations, or any format when a template renders it later) or (prompt, completion)."""
  vals = [record[c] for c in columns]
  if len(columns) == 1:
    return _messages(vals[0], where, columns[0])
  if len(columns) == 2:
    prompt, completion = vals
    if _is_messages(prompt):
      return _messages(prompt, where, columns[0]) + [{"role": "assistant", "content": _text(completion, where, columns[1])}]
    return _text(prompt, where, columns[0]), _text(completion, where, columns[1])
  instruction, extra, output = (_text(v, where, c) for v, c in zip(vals, columns))
  return (instruction + ("\n\n" + extra if extra else "")), output


def as_messages(example: list[dict] | tuple[str, str]) -> list[dict]:
  if isinstance(example, list):
    return example
  return [{"role": "user", "content": example[0]}, {"role": "assistant", "content": example[1]}]


def dpo_example(record: dict, columns: Sequence[str], where: str):
  """A preference row -> (prompt, chosen, rejected): all three messages, or all three text ('' prompt: implicit)."""
  vals = [record[c] for c in columns]
  if len(columns) == 2:
    chosen, rejected = vals
    if _is_messages(chosen) or _is_messages(rejected):
      c, r = _messages(chosen, where, columns[0]), _messages(rejected, where, columns[1])
      k = 0
      while k < min(len(c), len(r)) - 1 and c[k] == r[k]:
        k += 1
      return c[:k], c[k:], r[k:]
    return "", _text(chosen, where, columns[0]), _text(rejected, where, columns[1])
  prompt, chosen, rejected = vals
  if _is_messages(prompt) or _is_messages(chosen) or _is_messages(rejected):
    as_msgs = lambda v, c, role: _messages(v, where, c) if _is_messages(v) else [{"role": role, "content": _text(v, where, c)}]
    return (as_msgs(prompt, columns[0], "user"), as_msgs(chosen, columns[1], "assistant"),
            as_msgs(rejected, columns[2], "assistant"))
  return tuple(_text(v, where, c) for v, c in zip(vals, columns))


# ---- text + spans -> ids + mask ----
def _common_prefix(a: list[int], b: list[int]) -> int:
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  return n


def spans_to_tokens(encode, text: str, spans: Sequence[tuple[int, int]]) -> Encoded:
  """Token ids of `text` and a mask set on the tokens inside the character `spans` [start, end).

  A span edge maps to the number of leading tokens that `text[:edge]` and `text` share when tokenized; a token that
  straddles an edge belongs to what follows the edge.
  """
  ids = list(encode(text))
  mask = np.zeros(len(ids), np.int32)
  for start, end in spans:
    a = _common_prefix(encode(text[:start]), ids) if start else 0
    b = _common_prefix(encode(text[:end]), ids) if end < len(text) else len(ids)
    mask[a:b] = 1
  return Encoded(np.asarray(ids, np.int32), mask)


@dataclasses.dataclass
class Formatter:
  """Turns rows into `Encoded` sequences (picklable: the tokenizer pickles by path, the template as text)."""

  tokenizer: Tokenizer
  columns: tuple[str, ...]
  template: str | None  # None: no chat template (text records only)
  template_source: str
  completion_only: bool
  add_bos: bool = True
  add_eos: bool = True

  @functools.cached_property
  def _chat(self):
    from maxtext_like.serving.chat import ChatFormatter  # pylint: disable=g-import-not-at-top
    return ChatFormatter(self.template, self.template_source, self.tokenizer)

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_chat"}

  # -- rendering --
  def _render(self, messages: list[dict], add_generation_prompt: bool, where: str) -> str:
    from maxtext_like.serving.chat import ChatTemplateError  # pylint: disable=g-import-not-at-top
    try:
      return self._chat.render(messages, add_generation_prompt=add_generation_prompt)
    except ChatTemplateError as e:
      raise DataError(f"{where}: the chat template ({self.template_source}) does not render this record: {e}") from None

  def _encode_rendered(self, text: str) -> list[int]:
    from maxtext_like.serving.chat import encode_with_specials  # pylint: disable=g-import-not-at-top
    chat = self._chat
    return encode_with_specials(self.tokenizer, text, chat._split, chat._specials)  # pylint: disable=protected-access

  def _encode_plain(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_bos=self.add_bos, add_eos=False)

  def conversation(self, messages: list[dict], where: str, trained: Sequence[int] | None = None) -> Encoded:
    """Rendered ids; the mask covers the assistant turns at `trained` (default: all of them), or everything."""
    text = self._render(messages, False, where)
    if not self.completion_only:
      ids = np.asarray(self._encode_rendered(text), np.int32)
      return Encoded(ids, np.ones(len(ids), np.int32))
    turns = [k for k, m in enumerate(messages) if m["role"] == "assistant"] if trained is None else list(trained)
    if not turns:
      raise DataError(f"{where}: the conversation has no assistant turn, so sft_train_on_completion_only=true leaves "
                      "nothing to train on (drop the row, or set sft_train_on_completion_only=false)")
    spans = []
    for k in turns:
      before = self._render(messages[:k], True, where) if k else self._render([], True, where)
      through = self._render(messages[:k + 1], False, where)
      if not through.startswith(before) or not text.startswith(through):
        raise DataError(f"{where}: the chat template ({self.template_source}) renders assistant turn {k} differently "
                        "once later messages follow, so its tokens cannot be found; use a template whose rendering of "
                        "a conversation starts with the rendering of its beginning, or sft_train_on_completion_only=false")
      spans.append((len(before), len(through)))
    return spans_to_tokens(self._encode_rendered, text, spans)

  def text_pair(self, prompt: str, completion: str) -> Encoded:
    """bos + prompt + completion + eos tokenized as one text; the mask covers the completion and eos (or everything)."""
    enc = spans_to_tokens(self._encode_plain, prompt + completion,
                          [(0 if not self.completion_only else len(prompt), len(prompt) + len(completion))])
    ids, mask = enc.ids, enc.mask
    if self.add_eos:
      ids, mask = np.append(ids, np.int32(self.tokenizer.eos_id)), np.append(mask, np.int32(1))
    if self.completion_only and not mask.any():
      raise DataError("the completion is empty")
    return Encoded(ids, mask)

  def _needs_template(self, where: str) -> None:
    if self.template is None:
      raise DataError(f"{where}: this record holds messages, which need a chat template: set use_chat_template=true "
                      "and chat_template / chat_template_path (or use a Hugging Face tokenizer directory with its own)")

  # -- SFT --
  def sft(self, record: dict, where: str) -> Encoded:
    example = sft_example(record, self.columns, where)
    if self.template is not None:
      return self.conversation(as_messages(example), where)
    if isinstance(example, list):
      self._needs_template(where)
    try:
      return self.text_pair(*example)
    except DataError as e:
      raise DataError(f"{where}: {e}") from None

  # -- DPO --
  def dpo(self, record: dict, where: str) -> tuple[Encoded, Encoded]:
    """(chosen, rejected), each masked to its response (the prompt they share is never trained)."""
    prompt, chosen, rejected = dpo_example(record, self.columns, where)
    scored = self if self.completion_only else dataclasses.replace(self, completion_only=True)
    if isinstance(prompt, list) or self.template is not None:
      to_msgs = lambda v, role: v if isinstance(v, list) else ([{"role": role, "content": v}] if v else [])
      p = to_msgs(prompt, "user")
      if self.template is None:
        self._needs_template(where)
      out = []
      for side in (chosen, rejected):
        msgs = p + to_msgs(side, "assistant")
        trained = [k for k in range(len(p), len(msgs)) if msgs[k]["role"] == "assistant"]
        if not trained:
          raise DataError(f"{where}: a chosen/rejected response has no assistant turn to score")
        out.append(scored.conversation(msgs, where, trained))
      return out[0], out[1]
    if not prompt:  # implicit prompt: the longest common start of the two texts, cut back to a word boundary
      n = len(os.path.commonprefix([chosen, rejected]))
      while n and not chosen[n - 1].isspace():
        n -= 1
      prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    try:
      return scored.text_pair(prompt, chosen), scored.text_pair(prompt, rejected)
    except DataError as e:
      raise DataError(f"{where}: chosen or rejected: {e}") from None


def formatter_for(cfg, cols: Sequence[str]) -> Formatter:
  """The config's formatter for records of `cols`: tokenizer, template (when use_chat_template), completion masking."""
  from maxtext_like.runtime.tokenizer import tokenizer_for, tokenizer_path  # pylint: disable=g-import-not-at-top
  from maxtext_like.serving.chat import ChatTemplateError, find_template  # pylint: disable=g-import-not-at-top
  template, source = None, "none"
  if cfg.tokenizer.use_chat_template:
    try:
      template, source = find_template(cfg, tokenizer_path(cfg))
    except ChatTemplateError as e:
      raise DataError(str(e)) from None
    if template is None:
      raise DataError("use_chat_template=true but there is no chat template: set chat_template or chat_template_path "
                      f"(e.g. chat_template_path={plain_template_path()}), or use a Hugging Face tokenizer directory "
                      "that carries one")
    from maxtext_like.serving.chat import _compile  # pylint: disable=g-import-not-at-top,protected-access
    try:
      _compile(template)
    except ChatTemplateError as e:
      raise DataError(f"{source}: {e}") from None
  return Formatter(tokenizer_for(cfg), tuple(cols), template, source,
                   completion_only=cfg.finetune.sft_train_on_completion_only or cfg.finetune.use_dpo,
                   add_bos=cfg.tokenizer.add_bos, add_eos=cfg.tokenizer.add_eos)


def plain_template_path() -> str:
  """The project's plain-text chat template ('User: ...' / 'Assistant: ...'), for tokenizers without their own."""
  from maxtext_like import assets  # pylint: disable=g-import-not-at-top
  return assets.chat_path("plain.jinja")
