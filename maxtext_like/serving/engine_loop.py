"""The engine thread: the only code that touches the Batcher (it is not thread-safe).

The asyncio side calls `submit` / `cancel`, which only put a message on a thread-safe queue. The thread takes
messages between `Batcher.step()` calls, so a cancel (client gone) frees the slot before the next step. Tokens go
back through `loop.call_soon_threadsafe` onto the request's own asyncio queue, so the event loop never blocks on
the engine and the engine never waits for a slow client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import traceback

from maxtext_like.inference.batching import Batcher, Request
from maxtext_like.inference.engine import EngineError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Submission:
  """One Batcher request, and where its events go: ("token", choice, token, log_prob) and
  ("done", choice, finish_reason, error), with choice = first_choice + sample."""

  request: Request
  events: asyncio.Queue
  loop: asyncio.AbstractEventLoop
  first_choice: int = 0
  rid: int | None = None  # set by the engine thread

  def post(self, *event) -> None:
    self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class EngineLoop:
  """Runs `batcher` on its own thread; `running` / `waiting` are the latest slot and queue counts."""

  def __init__(self, batcher: Batcher, on_counts=None):
    self.batcher = batcher
    self.inbox: queue.SimpleQueue = queue.SimpleQueue()
    self.running = self.waiting = 0
    self.failure: str | None = None  # set when a step raised: the server reports itself unhealthy
    self._on_counts = on_counts
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

  @property
  def slots(self) -> int:
    return self.batcher.engine.max_concurrent_decodes

  def start(self) -> None:
    self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    self.inbox.put(("wake",))
    self._thread.join(timeout=10)

  def submit(self, sub: Submission) -> None:
    r = sub.request
    r.on_token = lambda sample, token, logp: sub.post("token", sub.first_choice + sample, token, logp)
    r.on_done = lambda sample, reason, error: sub.post("done", sub.first_choice + sample, reason, error)
    self.inbox.put(("submit", sub))

  def cancel(self, sub: Submission) -> None:
    self.inbox.put(("cancel", sub))

  # ---- the engine thread ----

  def _run(self) -> None:
    live: dict[int, Submission] = {}
    while not self._stop.is_set():
      self._take_messages(live, block=not self.batcher.busy)
      if self.failure is None and self.batcher.busy:
        try:
          self.batcher.step()
        except Exception:  # noqa: BLE001 - a bug in a step: fail every request, keep answering HTTP
          self.failure = traceback.format_exc()
          log.error("engine step failed; the server is now unhealthy:\n%s", self.failure)
          for sub in live.values():
            for j in range(sub.request.n):
              sub.post("done", sub.first_choice + j, "error", "internal engine error (see the server log)")
          live.clear()
      self._count(live)

  def _take_messages(self, live: dict[int, Submission], block: bool) -> None:
    try:
      msg = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
    except queue.Empty:
      return
    while True:
      self._handle(msg, live)
      try:
        msg = self.inbox.get_nowait()
      except queue.Empty:
        return

  def _handle(self, msg, live: dict[int, Submission]) -> None:
    kind = msg[0]
    if kind == "submit":
      sub = msg[1]
      if self.failure is not None:
        for j in range(sub.request.n):
          sub.post("done", sub.first_choice + j, "error", "the engine failed earlier; restart the server")
        return
      try:
        sub.rid = self.batcher.submit(sub.request)
        live[sub.rid] = sub
      except EngineError as e:
        for j in range(sub.request.n):
          sub.post("done", sub.first_choice + j, "error", str(e))
    elif kind == "cancel" and msg[1].rid is not None:
      self.batcher.cancel(msg[1].rid)

  def _count(self, live: dict[int, Submission]) -> None:
    b = self.batcher
    self.running = sum(s is not None for s in b.slots)
    self.waiting = len(b.queue)
    for rid in [rid for rid in live if rid not in {s.index for s in b.slots if s is not None}
                and rid not in {q[0] for q in b.queue}]:
      del live[rid]
      b.sequences.pop(rid, None)  # the server keeps its own copy; the Batcher's record would grow forever
    if self._on_counts is not None:
      self._on_counts(self.running, self.waiting)
