"""Request bodies of the OpenAI routes, their checks, and the OpenAI error object.

Bodies are parsed here rather than by FastAPI's signature binding so that every bad request (invalid JSON, a wrong
content type, a field out of range) gets the OpenAI error shape with a 4xx status and a message naming the field.
Unknown fields are ignored (clients send `user` and other fields a server may not use); fields that would change
the output and that the engine cannot honour (penalties, logit_bias, tools, best_of != n) are refused.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from maxtext_like.inference.sampling import SamplingOptions


class APIError(Exception):
  """An error the client caused (or a server state it must know about), rendered as OpenAI's error object."""

  def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None):
    super().__init__(message)
    self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

  def body(self) -> dict:
    return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Body(BaseModel):
  model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
  include_usage: bool = False


class _Sampling(_Body):
  """What both routes share: sampling, stops, samples, streaming."""

  model: str
  temperature: Annotated[float, Field(ge=0, le=2)] | None = None
  top_p: Annotated[float, Field(gt=0, le=1)] | None = None
  top_k: Annotated[int, Field(ge=-1)] | None = None
  n: Annotated[int, Field(ge=1)] = 1
  stop: str | list[str] | None = None
  stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
  seed: int | None = None
  stream: bool = False
  stream_options: StreamOptions | None = None
  presence_penalty: float | None = None
  frequency_penalty: float | None = None
  logit_bias: dict[str, float] | None = None

  def stop_strings(self) -> list[str]:
    stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
    if any(s == "" for s in stops):
      raise APIError(400, "stop strings must not be empty", param="stop")
    return stops

  def refuse_unsupported(self) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
      if getattr(self, name) not in (None, 0, 0.0):
        raise APIError(400, f"{name} is not supported by this server (only 0)", param=name)
    if self.logit_bias:
      raise APIError(400, "logit_bias is not supported by this server", param="logit_bias")

  def sampling(self, default: SamplingOptions) -> SamplingOptions:
    """The request's sampling. With none of temperature / top_p / top_k set: the server's config
    (decode_sampling_*). Otherwise temperature 0 is greedy, and a missing temperature is the config's (1.0 when the
    config is greedy); top_k (0 or -1: off), then top_p, then temperature, as vLLM applies them."""
    if self.temperature is None and self.top_p is None and self.top_k is None:
      return default
    if self.temperature is None:
      temperature = 1.0 if default.strategy == "greedy" else default.temperature
    else:
      temperature = self.temperature
    if temperature == 0:
      return SamplingOptions("greedy")
    top_k = max(0, self.top_k if self.top_k is not None else default.top_k)
    top_p = self.top_p if self.top_p is not None else default.nucleus_p
    return SamplingOptions("composite", float(temperature), int(top_k), float(top_p))


class CompletionRequest(_Sampling):
  prompt: str | list[str] | list[int] | list[list[int]]
  max_tokens: Annotated[int, Field(ge=1)] | None = 16
  logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
  echo: bool = False
  best_of: int | None = None
  suffix: str | None = None

  def refuse_unsupported(self) -> None:
    super().refuse_unsupported()
    if self.best_of not in (None, self.n):
      raise APIError(400, "best_of must equal n (this server returns every sample)", param="best_of")
    if self.suffix:
      raise APIError(400, "suffix (fill-in-the-middle) is not supported", param="suffix")
    if self.echo and self.logprobs is not None:
      raise APIError(400, "echo with logprobs needs prompt log-probs, which this server does not compute",
                     param="echo")

  def prompts(self) -> list[str | list[int]]:
    """One entry per prompt: text, or token ids."""
    p = self.prompt
    if isinstance(p, str):
      return [p]
    if not p:
      raise APIError(400, "prompt is empty", param="prompt")
    if all(isinstance(x, int) for x in p):
      return [list(p)]
    return list(p)


class TextPart(_Body):
  type: Literal["text"]
  text: str


class ChatMessage(_Body):
  role: str
  content: str | list[TextPart] | None = None
  name: str | None = None

  def as_template_input(self) -> dict[str, Any]:
    text = self.content if isinstance(self.content, str) or self.content is None else "".join(
        part.text for part in self.content)
    out = {"role": self.role, "content": text or ""}
    if self.name is not None:
      out["name"] = self.name
    return out


class ChatCompletionRequest(_Sampling):
  messages: Annotated[list[ChatMessage], Field(min_length=1)]
  max_tokens: Annotated[int, Field(ge=1)] | None = None
  max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
  logprobs: bool = False
  top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
  tools: list[dict] | None = None
  response_format: dict | None = None
  add_generation_prompt: bool = True

  def refuse_unsupported(self) -> None:
    super().refuse_unsupported()
    if self.tools:
      raise APIError(400, "tools are not supported by this server", param="tools")
    if self.response_format and self.response_format.get("type", "text") != "text":
      raise APIError(400, "only response_format type 'text' is supported", param="response_format")

  @property
  def token_budget(self) -> int | None:
    return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def parse_body(raw: bytes, content_type: str | None, model: type[BaseModel]) -> Any:
  """The request body as `model`, or an APIError: 415 for a non-JSON content type, 400 for bad JSON or fields."""
  if content_type is None or content_type.split(";")[0].strip().lower() != "application/json":
    raise APIError(415, f"Content-Type must be application/json (got {content_type or 'none'})",
                   param="Content-Type", code="unsupported_media_type")
  try:
    data = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
  if not isinstance(data, dict):
    raise APIError(400, "the request body must be a JSON object")
  try:
    req = model.model_validate(data)
  except pydantic.ValidationError as e:
    first = e.errors()[0]
    param = ".".join(str(x) for x in first["loc"]) or None
    problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()[:5])
    raise APIError(400, f"invalid request: {problems}", param=param) from None
  req.refuse_unsupported()
  return req
