"""The FastAPI app: OpenAI's /v1/completions, /v1/chat/completions (both streamed as server-sent events or not),
/v1/models, /health and /metrics; `serve(cfg, ...)` loads the model and runs it under uvicorn.

Every route handler is async and only waits on its own request's events, so one event loop serves any number of
clients while the engine thread batches them into its slots (inference/batching.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from maxtext_like.config import Config
from maxtext_like.data.tokenizers import Tokenizer
from maxtext_like.inference.engine import MAX_STOP_IDS, Engine, EngineError
from maxtext_like.inference.sampling import SamplingOptions
from maxtext_like.serving.chat import ChatFormatter, ChatTemplateError
from maxtext_like.serving.engine_loop import EngineLoop
from maxtext_like.serving.generation import Choice, Generation
from maxtext_like.serving.metrics import Metrics
from maxtext_like.serving.protocol import APIError, ChatCompletionRequest, CompletionRequest, parse_body

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.25  # how often a non-streamed request checks that its client is still there


@dataclasses.dataclass
class Server:
  """What the routes need: the tokenizer, the engine's limits, the engine thread, the chat formatter."""

  tok: Tokenizer
  engine: Engine
  engine_loop: EngineLoop
  chat: ChatFormatter
  model_name: str
  metrics: Metrics
  default_sampling: SamplingOptions
  extra_stop_ids: tuple[int, ...] = ()
  vocab_size: int = 0
  created: int = dataclasses.field(default_factory=lambda: int(time.time()))

  # ---- request checks (on the event loop, before anything reaches the engine) ----

  def check_model(self, name: str) -> None:
    if name != self.model_name:
      raise APIError(404, f"the model {name!r} does not exist; this server serves {self.model_name!r}",
                     param="model", code="model_not_found")

  def check_prompt(self, ids: list[int], max_tokens: int | None, n: int, param: str) -> int:
    """The token budget of one prompt: `max_tokens`, or all the room left in the cache row when it is None."""
    bad = [i for i in ids if not 0 <= i < self.vocab_size]
    if bad:
      raise APIError(400, f"prompt token ids must be in [0, {self.vocab_size}); got {bad[:5]}", param=param)
    try:
      self.engine.check_prompt(len(ids))
    except EngineError as e:
      raise APIError(400, str(e), param=param, code="context_length_exceeded") from None
    room = self.engine.max_target_length - len(ids)
    if max_tokens is not None and max_tokens > room:
      raise APIError(400, f"max_tokens={max_tokens} with a prompt of {len(ids)} tokens needs {len(ids) + max_tokens}"
                     f" positions; this server's max_target_length is {self.engine.max_target_length} (at most "
                     f"{room} new tokens for this prompt)", param="max_tokens", code="context_length_exceeded")
    if n > 1 and not self.engine.multi_sampling:
      raise APIError(400, f"n={n}: several samples per prompt need the server started with multi_sampling=true",
                     param="n")
    if n > self.engine.max_concurrent_decodes:
      raise APIError(400, f"n={n} samples need that many slots; this server has {self.engine.max_concurrent_decodes}",
                     param="n")
    return room if max_tokens is None else max_tokens

  def stop_ids(self, requested: list[int] | None) -> tuple[int, ...]:
    ids = tuple(dict.fromkeys([*(requested or []), *self.extra_stop_ids]))
    if len(ids) > MAX_STOP_IDS - 1:  # the engine keeps MAX_STOP_IDS per slot, eos included
      raise APIError(400, f"at most {MAX_STOP_IDS - 1 - len(self.extra_stop_ids)} stop_token_ids", param="stop_token_ids")
    return ids

  def generation(self, req, prompts: list[list[int]], budget: int | None, param: str) -> Generation:
    budgets = [self.check_prompt(ids, budget, req.n, param) for ids in prompts]
    return Generation(self.engine_loop, self.metrics, self.tok, prompts, n=req.n, max_tokens=budgets,
                      stop_strings=req.stop_strings(), sampling=req.sampling(self.default_sampling),
                      stop_ids=self.stop_ids(req.stop_token_ids), seed=req.seed)


def _sse(obj) -> str:
  return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _error_of(gen: Generation) -> APIError | None:
  failed = [c for c in gen.choices if c.finish_reason == "error"]
  return None if not failed else APIError(503, f"generation failed: {failed[0].error}", type_="server_error")


async def _wait(gen: Generation, request: HTTPRequest) -> bool:
  """Runs a non-streamed generation to its end; False if the client left first (its slots are freed)."""
  gen.start()
  checked = time.monotonic()
  try:
    while not gen.finished:
      try:
        await gen.next_events(timeout=DISCONNECT_POLL_S)
      except asyncio.TimeoutError:
        pass
      if time.monotonic() - checked >= DISCONNECT_POLL_S:  # by the clock: tokens may arrive without pause
        checked = time.monotonic()
        if await request.is_disconnected():
          return False
    return True
  finally:
    if not gen.finished:
      gen.cancel()


def _completion_logprobs(c: Choice, pieces: list[tuple[str, float]], offset: int, k: int) -> dict:
  offsets = []
  for text, _ in pieces:
    offsets.append(offset)
    offset += len(text)
  return {"tokens": [t for t, _ in pieces], "token_logprobs": [lp for _, lp in pieces],
          "top_logprobs": [{t: lp} for t, lp in pieces] if k > 0 else None, "text_offset": offsets}


def _chat_logprobs(pieces: list[tuple[str, float]], top: int) -> dict:
  def entry(t, lp):
    return {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}
  return {"content": [{**entry(t, lp), "top_logprobs": [entry(t, lp)] if top > 0 else []} for t, lp in pieces]}


async def completions(s: Server, request: HTTPRequest):
  req: CompletionRequest = parse_body(await request.body(), request.headers.get("content-type"), CompletionRequest)
  s.check_model(req.model)
  texts, prompts = [], []
  for p in req.prompts():
    if isinstance(p, str):
      texts.append(p)
      prompts.append(s.tok.encode(p, add_eos=False))
    else:
      texts.append(None)
      prompts.append(list(p))
  gen = s.generation(req, prompts, req.max_tokens, "prompt")
  echo = [""] * len(gen.choices)
  if req.echo:
    echo = [texts[k // req.n] if texts[k // req.n] is not None else s.tok.decode(prompts[k // req.n])
            for k in range(len(gen.choices))]
  rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
  offsets = [len(e) for e in echo]

  def logprobs_of(c: Choice):
    if req.logprobs is None:
      return None
    pieces = c.take_logprobs()
    out = _completion_logprobs(c, pieces, offsets[c.index], req.logprobs)
    offsets[c.index] += sum(len(t) for t, _ in pieces)
    return out

  def chunk(choices, usage=None):
    body = {"id": rid, "object": "text_completion", "created": created, "model": s.model_name, "choices": choices}
    if req.stream_options and req.stream_options.include_usage:
      body["usage"] = usage
    return body

  if not req.stream:
    if not await _wait(gen, request):
      return Response(status_code=499)
    if (err := _error_of(gen)) is not None:
      raise err
    choices = [{"index": c.index, "text": echo[c.index] + c.text, "logprobs": logprobs_of(c),
                "finish_reason": c.finish_reason} for c in gen.choices]
    return {"id": rid, "object": "text_completion", "created": created, "model": s.model_name, "choices": choices,
            "usage": gen.usage()}

  async def events():
    if req.echo:
      yield _sse(chunk([{"index": k, "text": e, "logprobs": None, "finish_reason": None} for k, e in enumerate(echo)]))
    async for c, text in _stream_choices(gen):
      if c.finish_reason == "error":
        yield _sse(APIError(503, f"generation failed: {c.error}", type_="server_error").body())
        continue
      yield _sse(chunk([{"index": c.index, "text": text, "logprobs": logprobs_of(c),
                         "finish_reason": c.finish_reason if c.reported else None}]))
    if req.stream_options and req.stream_options.include_usage:
      yield _sse(chunk([], gen.usage()))
    yield "data: [DONE]\n\n"

  return StreamingResponse(events(), media_type="text/event-stream")


async def _stream_choices(gen: Generation):
  """(choice, new text) as events arrive; a choice's last item has `reported` set (its finish_reason goes out)."""
  gen.start()
  try:
    while not gen.finished:
      touched = await gen.next_events()
      for k in sorted(touched):
        c = gen.choices[k]
        last = c.finish_reason is not None and not c.reported
        if touched[k] or c.unsent or last:
          c.reported = c.reported or last
          yield c, touched[k]
  finally:
    if not gen.finished:
      gen.cancel()  # the client went away (the response task is cancelled): free the slots at once


async def chat_completions(s: Server, request: HTTPRequest):
  req: ChatCompletionRequest = parse_body(await request.body(), request.headers.get("content-type"),
                                          ChatCompletionRequest)
  s.check_model(req.model)
  try:
    ids = s.chat.encode([m.as_template_input() for m in req.messages], req.add_generation_prompt)
  except ChatTemplateError as e:
    raise APIError(400, str(e), param="messages") from None
  gen = s.generation(req, [ids], req.token_budget, "messages")
  rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
  top = req.top_logprobs or 0

  def logprobs_of(c: Choice):
    return _chat_logprobs(c.take_logprobs(), top) if req.logprobs else None

  if not req.stream:
    if not await _wait(gen, request):
      return Response(status_code=499)
    if (err := _error_of(gen)) is not None:
      raise err
    choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text}, "logprobs": logprobs_of(c),
                "finish_reason": c.finish_reason} for c in gen.choices]
    return {"id": rid, "object": "chat.completion", "created": created, "model": s.model_name, "choices": choices,
            "usage": gen.usage()}

  include_usage = bool(req.stream_options and req.stream_options.include_usage)

  def chunk(choices, usage=None):
    body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": s.model_name,
            "choices": choices}
    if include_usage:
      body["usage"] = usage
    return body

  async def events():
    yield _sse(chunk([{"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                       "finish_reason": None} for c in gen.choices]))
    async for c, text in _stream_choices(gen):
      if c.finish_reason == "error":
        yield _sse(APIError(503, f"generation failed: {c.error}", type_="server_error").body())
        continue
      delta = {"content": text} if text else {}
      yield _sse(chunk([{"index": c.index, "delta": delta, "logprobs": logprobs_of(c),
                         "finish_reason": c.finish_reason if c.reported else None}]))
    if include_usage:
      yield _sse(chunk([], gen.usage()))
    yield "data: [DONE]\n\n"

  return StreamingResponse(events(), media_type="text/event-stream")


def create_app(s: Server, *, metrics_route: bool) -> FastAPI:
  app = FastAPI(title="maxtext_like", docs_url=None, redoc_url=None, openapi_url=None)

  def counted(route: str, status: int) -> None:
    s.metrics.requests.labels(route, str(status)).inc()

  @app.exception_handler(APIError)
  async def _api_error(request: HTTPRequest, e: APIError):
    counted(request.url.path, e.status)
    return JSONResponse(e.body(), status_code=e.status)

  @app.exception_handler(StarletteHTTPException)
  async def _http_error(request: HTTPRequest, e: StarletteHTTPException):
    what = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    err = APIError(e.status_code, what.get(e.status_code, str(e.detail)), code="not_found" if e.status_code == 404
                   else None)
    return await _api_error(request, err)

  @app.exception_handler(RequestValidationError)
  async def _validation_error(request: HTTPRequest, e: RequestValidationError):
    return await _api_error(request, APIError(400, f"invalid request: {e.errors()[:3]}"))

  @app.get("/health")
  async def health():
    loop = s.engine_loop
    body = {"status": "ok" if loop.failure is None else "failed", "slots": loop.slots, "running": loop.running,
            "waiting": loop.waiting}
    return JSONResponse(body, status_code=200 if loop.failure is None else 503)

  @app.get("/v1/models")
  async def models():
    return {"object": "list", "data": [{"id": s.model_name, "object": "model", "created": s.created,
                                        "owned_by": "maxtext_like", "max_model_len": s.engine.max_target_length}]}

  @app.post("/v1/completions")
  async def _completions(request: HTTPRequest):
    out = await completions(s, request)
    counted("/v1/completions", getattr(out, "status_code", 200))
    return out

  @app.post("/v1/chat/completions")
  async def _chat(request: HTTPRequest):
    out = await chat_completions(s, request)
    counted("/v1/chat/completions", getattr(out, "status_code", 200))
    return out

  if metrics_route:
    from prometheus_client import CONTENT_TYPE_LATEST

    @app.get("/metrics")
    async def metrics():
      return Response(s.metrics.render(), media_type=CONTENT_TYPE_LATEST)

  return app


def build_server(cfg: Config, *, model_name: str | None = None) -> Server:
  """Tokenizer, parameters (as decode loads them), engine, Batcher and the engine thread (not started yet)."""
  from maxtext_like.inference.batching import Batcher
  from maxtext_like.inference.loading import load_model, sampling_options
  from maxtext_like.runtime.tokenizer import tokenizer_for, tokenizer_path
  from maxtext_like.serving.chat import generation_stop_ids
  tok = tokenizer_for(cfg)
  chat = ChatFormatter.for_config(cfg, tok)
  loaded = load_model(cfg)
  log.warning("parameters: %s; chat template: %s", loaded.source, chat.source)
  engine = Engine(cfg, loaded.model)
  batcher = Batcher.for_config(engine, cfg, tok.eos_id)
  metrics = Metrics()
  return Server(tok=tok, engine=engine, engine_loop=EngineLoop(batcher, on_counts=metrics.counts), chat=chat,
                model_name=model_name or cfg.run.model_name, metrics=metrics, default_sampling=sampling_options(cfg),
                extra_stop_ids=generation_stop_ids(cfg, tokenizer_path(cfg)), vocab_size=engine.vocab_size)


def serve(cfg: Config, *, host: str, port: int, metrics: bool = False, model_name: str | None = None) -> None:
  """Blocks serving HTTP until interrupted. /metrics when `metrics` or prometheus_port asks for it; prometheus_port
  also serves them on that port."""
  import uvicorn
  s = build_server(cfg, model_name=model_name)
  prometheus_port = cfg.metrics.prometheus_port
  if prometheus_port:
    s.metrics.serve_on(prometheus_port, host)
  app = create_app(s, metrics_route=metrics or bool(prometheus_port))
  s.engine_loop.start()
  try:
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                  timeout_graceful_shutdown=5)).run()
  finally:
    s.engine_loop.stop()
