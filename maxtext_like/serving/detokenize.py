"""Incremental detokenization, and stop strings over the streamed text.

Decoding each new token alone loses what depends on its neighbours (sentencepiece drops a leading space at the
start of a decode; a multi-byte character spans several byte tokens). `Detokenizer` decodes a short window of
recent ids twice, without and with the new ones, and emits the difference once it is complete (not ending in
U+FFFD, a character still waiting for its bytes). `finish()` returns the rest of `tok.decode(all ids)`, so the
pieces always join to exactly the text a non-streamed response carries.

`StopMatcher` cuts the text at the first stop string and holds back a tail that could still grow into one, so a
client never sees the start of a stop string that the next token completes.
"""

from __future__ import annotations

from maxtext_like.data.tokenizers import Tokenizer

_INCOMPLETE = "\ufffd"


class Detokenizer:
  def __init__(self, tok: Tokenizer):
    self.tok = tok
    self.ids: list[int] = []
    self.text = ""  # emitted so far
    self._prefix = 0  # window start: the decode of ids[_prefix:_read] is already part of `text`
    self._read = 0

  def add(self, token: int) -> str:
    """The new text that `token` completes ('' while a character is unfinished)."""
    self.ids.append(token)
    before = self.tok.decode(self.ids[self._prefix:self._read])
    after = self.tok.decode(self.ids[self._prefix:])
    if len(after) <= len(before) or after.endswith(_INCOMPLETE) or not after.startswith(before):
      return ""
    delta = after[len(before):]
    self._prefix, self._read = self._read, len(self.ids)
    self.text += delta
    return delta

  def finish(self) -> str:
    """What is left of the full decode (held bytes, or text only the whole sequence decodes to)."""
    full = self.tok.decode(self.ids)
    rest = full[len(self.text):] if full.startswith(self.text) else ""
    self.text += rest
    return rest


class StopMatcher:
  """Feeds text through; `push` returns (text safe to send, stopped)."""

  def __init__(self, stops: list[str]):
    self.stops = stops
    self.longest = max((len(s) for s in stops), default=0)
    self.pending = ""
    self.sent = ""  # everything released, for the final text
    self.stopped = False

  def push(self, delta: str) -> tuple[str, bool]:
    if self.stopped:
      return "", True
    if not self.stops:
      self.sent += delta
      return delta, False
    buf = self.pending + delta
    cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
    if cut >= 0:
      self.stopped = True
      self.pending = ""
      self.sent += buf[:cut]
      return buf[:cut], True
    hold = self._partial_tail(buf)
    out, self.pending = buf[:len(buf) - hold], buf[len(buf) - hold:]
    self.sent += out
    return out, False

  def flush(self) -> str:
    """At the end of the sequence a held tail is plain text."""
    out, self.pending = self.pending, ""
    self.sent += out
    return out

  def _partial_tail(self, buf: str) -> int:
    """Length of the longest suffix of `buf` that is a proper prefix of some stop string."""
    for n in range(min(len(buf), self.longest - 1), 0, -1):
      tail = buf[-n:]
      if any(s.startswith(tail) for s in self.stops):
        return n
    return 0


def token_text(tok: Tokenizer, token_id: int) -> str:
  """One token's own text for logprobs (its leading space kept: sentencepiece's decode of a lone piece drops it)."""
  from maxtext_like.data.tokenizers import SentencePieceTokenizer
  if isinstance(tok, SentencePieceTokenizer):
    return tok._sp.id_to_piece(int(token_id)).replace("\u2581", " ")  # pylint: disable=protected-access
  return tok.decode([int(token_id)])
