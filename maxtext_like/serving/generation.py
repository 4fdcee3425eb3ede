"""One HTTP request's generation: its Batcher requests (one per prompt, `n` samples each) and its choices as the
client sees them (detokenized, cut at stop strings), fed by events from the engine thread.

A choice that hits a stop string ends at once; when every sample of a prompt has ended that way its Batcher
request is cancelled, so the slots do not decode text nobody will read.
"""

from __future__ import annotations

import asyncio
import time

from maxtext_like.data.tokenizers import Tokenizer
from maxtext_like.inference.batching import Request
from maxtext_like.serving.detokenize import Detokenizer, StopMatcher, token_text
from maxtext_like.serving.engine_loop import EngineLoop, Submission
from maxtext_like.serving.metrics import Metrics


class Choice:
  """One sample: its tokens, their log-probs, and its text."""

  def __init__(self, index: int, tok: Tokenizer, stops: list[str]):
    self.index, self.tok = index, tok
    self.detok, self.stops = Detokenizer(tok), StopMatcher(stops)
    self.tokens: list[int] = []
    self.log_probs: list[float] = []
    self.unsent: list[tuple[int, float]] = []  # tokens not yet in a streamed chunk (for streamed logprobs)
    self.finish_reason: str | None = None
    self.error: str | None = None
    self.reported = False  # its finish_reason went out in a stream chunk
    self.first_at: float | None = None
    self.last_at: float | None = None

  @property
  def text(self) -> str:
    return self.stops.sent

  def token(self, token: int, log_prob: float, now: float) -> str:
    if self.finish_reason is not None:
      return ""
    self.first_at = self.first_at or now
    self.last_at = now
    self.tokens.append(token)
    self.log_probs.append(log_prob)
    self.unsent.append((token, log_prob))
    text, stopped = self.stops.push(self.detok.add(token))
    if stopped:
      self.finish_reason = "stop"
    return text

  def done(self, reason: str, error: str | None) -> str:
    if self.finish_reason is not None:
      return ""
    text, stopped = self.stops.push(self.detok.finish())
    if not stopped:
      text += self.stops.flush()
    self.finish_reason = "stop" if stopped else reason
    self.error = error
    return text

  def take_logprobs(self) -> list[tuple[str, float]]:
    out = [(token_text(self.tok, t), lp) for t, lp in self.unsent]
    self.unsent = []
    return out


class Generation:
  def __init__(self, engine_loop: EngineLoop, metrics: Metrics, tok: Tokenizer, prompts: list[list[int]], *,
               n: int, max_tokens: int | list[int], stop_strings: list[str], **request_fields):
    self.engine_loop, self.metrics = engine_loop, metrics
    self.loop = asyncio.get_running_loop()
    self.events: asyncio.Queue = asyncio.Queue()
    budgets = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    self.subs = [Submission(Request(list(ids), max_tokens=m, n=n, **request_fields), self.events, self.loop,
                            first_choice=i * n) for i, (ids, m) in enumerate(zip(prompts, budgets))]
    self.n = n
    self.choices = [Choice(k, tok, stop_strings) for k in range(len(prompts) * n)]
    self.prompt_tokens = sum(len(p) for p in prompts)
    self.started = time.perf_counter()
    self.first_token_at: float | None = None

  @property
  def finished(self) -> bool:
    return all(c.finish_reason is not None for c in self.choices)

  @property
  def completion_tokens(self) -> int:
    return sum(len(c.tokens) for c in self.choices)

  def usage(self) -> dict:
    return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens}

  def start(self) -> None:
    self.metrics.prompt_tokens.inc(self.prompt_tokens)
    for sub in self.subs:
      self.engine_loop.submit(sub)

  def cancel(self) -> None:
    for sub in self.subs:
      self.engine_loop.cancel(sub)

  async def next_events(self, timeout: float | None = None) -> dict[int, str]:
    """Waits for at least one event, takes every event already there; new text per choice touched."""
    event = await asyncio.wait_for(self.events.get(), timeout)
    out: dict[int, str] = {}
    while True:
      self._apply(event, out)
      try:
        event = self.events.get_nowait()
      except asyncio.QueueEmpty:
        return out

  def _apply(self, event, out: dict[int, str]) -> None:
    kind, k = event[0], event[1]
    c = self.choices[k]
    was_open = c.finish_reason is None
    now = time.perf_counter()
    if kind == "token":
      if self.first_token_at is None:
        self.first_token_at = now
        self.metrics.ttft.observe(now - self.started)
      self.metrics.generation_tokens.inc()
      text = c.token(event[2], event[3], now)
    else:
      text = c.done(event[2], event[3])
    out[k] = out.get(k, "") + text
    if was_open and c.finish_reason is not None:
      self._closed(c, now)

  def _closed(self, c: Choice, now: float) -> None:
    if c.first_at is not None and len(c.tokens) > 1:
      self.metrics.per_token.observe((c.last_at - c.first_at) / (len(c.tokens) - 1))
    sub = self.subs[c.index // self.n]
    if all(self.choices[sub.first_choice + j].finish_reason is not None for j in range(self.n)):
      self.engine_loop.cancel(sub)  # no-op when the Batcher already finished it; frees slots after stop strings
    if self.finished:
      self.metrics.latency.observe(now - self.started)
