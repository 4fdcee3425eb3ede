"""The OpenAI-compatible HTTP server on the inference engine (`python -m maxtext_like.serve`, docs/serving.md).

  protocol.py     request bodies, their checks, and the OpenAI error object
  chat.py         chat templates (Jinja, as Hugging Face renders them) and special-token-aware encoding
  detokenize.py   incremental detokenization and stop strings over the streamed text
  engine_loop.py  the one thread that owns the Batcher; asyncio hands it requests and gets tokens back
  metrics.py      Prometheus counters and histograms
  app.py          the FastAPI routes, SSE streaming, and `serve(cfg, ...)`
"""
