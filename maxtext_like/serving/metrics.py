"""Prometheus metrics of the server, on a registry of its own (two servers in one process do not collide).

Names follow Prometheus conventions with a `maxtext_like_` prefix; times are measured where the client sees them
(from the parsed request to the first streamed token), not inside the engine.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
  def __init__(self):
    r = self.registry = CollectorRegistry()
    self.requests = Counter("maxtext_like_requests", "HTTP requests by route and status code", ["route", "status"],
                            registry=r)
    self.prompt_tokens = Counter("maxtext_like_prompt_tokens", "prompt tokens prefilled", registry=r)
    self.generation_tokens = Counter("maxtext_like_generation_tokens", "tokens generated", registry=r)
    self.queue_depth = Gauge("maxtext_like_queue_depth", "requests waiting for a free slot", registry=r)
    self.running = Gauge("maxtext_like_running_sequences", "slots decoding now", registry=r)
    self.ttft = Histogram("maxtext_like_time_to_first_token_seconds", "request parsed -> first token",
                          buckets=LATENCY_BUCKETS, registry=r)
    self.per_token = Histogram("maxtext_like_time_per_output_token_seconds",
                               "mean time between tokens of one sample after its first", buckets=TOKEN_BUCKETS,
                               registry=r)
    self.latency = Histogram("maxtext_like_request_latency_seconds", "request parsed -> last token",
                             buckets=LATENCY_BUCKETS, registry=r)

  def counts(self, running: int, waiting: int) -> None:
    self.running.set(running)
    self.queue_depth.set(waiting)

  def render(self) -> bytes:
    return generate_latest(self.registry)

  def serve_on(self, port: int, host: str) -> None:
    """The same metrics on a port of their own (prometheus_port)."""
    start_http_server(port, addr=host, registry=self.registry)
