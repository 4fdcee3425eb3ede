"""The server on a free localhost port, through the official `openai` client: completions and chat, streamed and
not, n > 1, stop strings and stop token ids, logprobs, greedy parity with `maxtext_like.decode`'s generation,
OpenAI error objects with 4xx for bad requests, and a client that disconnects mid-stream freeing its slot."""

import http.client
import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from maxtext_like import assets
from maxtext_like.data import build_tokenizer

PROMPT = "It is a truth universally acknowledged"
MODEL = "default"


def _get(served, path):
  with urllib.request.urlopen(served.url + path, timeout=30) as r:
    return r.read().decode()


def _post_raw(served, path, body: bytes, content_type="application/json"):
  req = urllib.request.Request(served.url + path, data=body, headers={"Content-Type": content_type})
  try:
    with urllib.request.urlopen(req, timeout=60) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _metric(served, name):
  for line in _get(served, "/metrics").splitlines():
    if line.startswith(name + " "):
      return float(line.split()[1])
  raise AssertionError(f"{name} not in /metrics")


@pytest.fixture(scope="module")
def client(server):
  return server.client()


@pytest.fixture(scope="module")
def greedy(client):
  """The greedy continuation of PROMPT with decode's budget (max_target_length - max_prefill_predict_length)."""
  return client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=448, temperature=0)


def test_greedy_http_equals_decode(server, greedy):
  from maxtext_like.api import generate
  from maxtext_like.config import load_config
  cfg = load_config(server.argv, env={})
  assert greedy.choices[0].text == generate(cfg, [PROMPT])[0]
  assert greedy.usage.prompt_tokens == len(build_tokenizer("sentencepiece", assets.tokenizer_path(), True,
                                                           False).encode(PROMPT))


def test_greedy_chat_equals_decode_with_the_chat_template(server, client):
  """decode with use_chat_template=true sends its prompt as one user message through the same template."""
  from maxtext_like.api import generate
  from maxtext_like.config import load_config
  msg = [{"role": "user", "content": "Who is Emma Woodhouse?"}]
  got = client.chat.completions.create(model=MODEL, messages=msg, max_tokens=40, temperature=0)
  cfg = load_config([*server.argv, "use_chat_template=true", "max_target_length=104"], env={})  # 104 - 64 = 40 tokens
  assert got.choices[0].message.content == generate(cfg, [msg[0]["content"]])[0]


def test_seed_makes_sampling_reproducible(client):
  args = dict(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=1.5, seed=11)
  a, b = (client.completions.create(**args).choices[0].text for _ in range(2))
  other = client.completions.create(**{**args, "seed": 12}).choices[0].text
  assert a == b and a != other


def test_models_and_health(server, client):
  assert [m.id for m in client.models.list().data] == [MODEL]
  assert json.loads(_get(server, "/health"))["slots"] == 4


def test_streamed_completion_is_the_text_in_pieces(client, greedy):
  chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0, stream=True,
                                          stream_options={"include_usage": True}))
  pieces = [c.choices[0].text for c in chunks if c.choices]
  assert len(pieces) > 1 and "".join(pieces) == client.completions.create(
      model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0).choices[0].text
  assert greedy.choices[0].text.startswith("".join(pieces))
  assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
  assert chunks[-1].usage.completion_tokens == 40 and not chunks[-1].choices


def test_n_samples_and_several_prompts(client):
  out = client.completions.create(model=MODEL, prompt=[PROMPT, "Emma Woodhouse"], n=3, max_tokens=12,
                                  temperature=1.0, top_p=0.95, seed=7, logprobs=1)
  assert sorted(c.index for c in out.choices) == list(range(6))
  assert all(len(c.logprobs.tokens) == 12 and c.finish_reason == "length" for c in out.choices)
  assert all(lp <= 0 for c in out.choices for lp in c.logprobs.token_logprobs)
  assert out.usage.completion_tokens == 72
  assert len({c.text for c in out.choices}) > 1  # sampled, not six copies


def test_stop_strings_and_stop_token_ids(client, greedy):
  text = greedy.choices[0].text
  stop = text[10:14]
  cut = text[:text.find(stop)]
  for stream in (False, True):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=60, temperature=0, stop=[stop],
                                  stream=stream)
    got = "".join(c.choices[0].text for c in r) if stream else r.choices[0].text
    assert got == cut
  with_ids = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0, logprobs=0)
  sp = build_tokenizer("sentencepiece", assets.tokenizer_path(), False, False)._sp
  fifth = sp.piece_to_id(with_ids.choices[0].logprobs.tokens[5].replace(" ", "\u2581"))
  r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0,
                                extra_body={"stop_token_ids": [fifth]})
  assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 5
  assert r.choices[0].text == "".join(with_ids.choices[0].logprobs.tokens[:5]).lstrip(" ")


def test_chat_streamed_and_not(client):
  msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who is Mr. Darcy?"}]
  full = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=20, temperature=0, logprobs=True,
                                        top_logprobs=1)
  c = full.choices[0]
  assert c.message.role == "assistant" and c.finish_reason == "length" and len(c.logprobs.content) == 20
  assert full.usage.prompt_tokens > 10  # the rendered template, not only the words
  chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=20, temperature=0,
                                               stream=True, stream_options={"include_usage": True}))
  assert chunks[0].choices[0].delta.role == "assistant"
  assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == c.message.content
  assert chunks[-1].usage.total_tokens == full.usage.total_tokens
  two = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, n=2, temperature=0.8)
  assert [x.index for x in two.choices] == [0, 1]


@pytest.mark.parametrize("kwargs, status, param", [
    ({"model": "gpt-4"}, 404, "model"),
    ({"temperature": 3.0}, 400, "temperature"),
    ({"top_p": 0.0}, 400, "top_p"),
    ({"n": 0}, 400, "n"),
    ({"n": 5}, 400, "n"),  # more samples than slots
    ({"max_tokens": 600}, 400, "max_tokens"),  # past max_target_length
    ({"prompt": list(range(1, 70))}, 400, "prompt"),  # longer than max_prefill_predict_length
    ({"prompt": [5000]}, 400, "prompt"),  # not a token id of this model
    ({"presence_penalty": 0.5}, 400, "presence_penalty"),
])
def test_bad_completion_requests_get_openai_errors(client, kwargs, status, param):
  args = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, **kwargs}
  with pytest.raises(openai.APIStatusError) as e:
    client.completions.create(**args)
  assert e.value.status_code == status
  assert e.value.body["param"] == param and e.value.body["message"]


def test_bad_bodies_and_routes(server, client):
  assert _post_raw(server, "/v1/completions", b"{not json")[0] == 400
  status, body = _post_raw(server, "/v1/completions", b'{"model": "default", "prompt": "x"}', "text/plain")
  assert status == 415 and "application/json" in body["error"]["message"]
  status, body = _post_raw(server, "/v1/chat/completions", b'{"model": "default"}')
  assert status == 400 and body["error"]["param"] == "messages"
  long_chat = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "word " * 80}]}).encode()
  status, body = _post_raw(server, "/v1/chat/completions", long_chat)
  assert status == 400 and body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "messages"
  status, body = _post_raw(server, "/v1/nothing", b"{}")
  assert status == 404 and body["error"]["code"] == "not_found"
  with pytest.raises(openai.BadRequestError):
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2,
                                   tools=[{"type": "function", "function": {"name": "f"}}])


def test_disconnect_frees_the_slots(server):
  before = _metric(server, "maxtext_like_generation_tokens_total")
  body = json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 448, "temperature": 0.7, "stream": True})
  conns = []
  for _ in range(4):  # every slot
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    conns.append(conn)
  for conn in conns:
    conn.sock.close()
    conn.close()
  deadline = time.time() + 10
  while json.loads(_get(server, "/health"))["running"] and time.time() < deadline:
    time.sleep(0.05)
  assert json.loads(_get(server, "/health")) == {"status": "ok", "slots": 4, "running": 0, "waiting": 0}
  generated = _metric(server, "maxtext_like_generation_tokens_total") - before
  assert generated < 4 * 448 / 2, generated  # stopped well before their budgets
  fresh = server.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0)
  assert fresh.usage.completion_tokens == 3


def test_disconnect_frees_the_slots_of_a_non_streamed_request(server, client):
  args = {"model": MODEL, "prompt": PROMPT, "max_tokens": 448, "n": 4, "temperature": 0.7}
  client.completions.create(**{**args, "max_tokens": 2})  # compiles the 4-sample prefill
  t0 = time.perf_counter()
  client.completions.create(**args)  # all four slots for its whole length
  full = time.perf_counter() - t0
  conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
  conn.request("POST", "/v1/completions", body=json.dumps(args), headers={"Content-Type": "application/json"})
  time.sleep(0.05)
  conn.sock.close()
  conn.close()
  t0 = time.perf_counter()
  client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, temperature=0)  # needs a free slot
  assert time.perf_counter() - t0 < 0.6 * full, (time.perf_counter() - t0, full)


def test_metrics_count_requests_and_tokens(server):
  text = _get(server, "/metrics")
  assert 'maxtext_like_requests_total{route="/v1/completions",status="200"}' in text
  assert "maxtext_like_time_to_first_token_seconds_count" in text
  assert _metric(server, "maxtext_like_generation_tokens_total") > 500
  assert _metric(server, "maxtext_like_queue_depth") == 0
