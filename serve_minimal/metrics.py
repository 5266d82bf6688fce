"""Prometheus metrics for one server (its own registry: two apps in one process never mix counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "invoker_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=self.registry
        )
        self.prompt_tokens = Counter("invoker_prompt_tokens", "prompt tokens processed", registry=self.registry)
        self.completion_tokens = Counter("invoker_completion_tokens", "tokens generated", registry=self.registry)
        self.completions = Counter(
            "invoker_completions", "chat completions finished, by finish reason", ["finish_reason"], registry=self.registry
        )
        self.invalid_outputs = Counter(
            "invoker_invalid_outputs", "answers that did not parse as Invoker output (see the server log)",
            registry=self.registry,
        )
        self.schema_invalid_calls = Counter(
            "invoker_schema_invalid_calls", "calls whose arguments did not validate against the function's schema",
            registry=self.registry,
        )
        self.cancelled = Counter("invoker_cancelled_generations", "generations stopped by a client disconnect",
                                 registry=self.registry)
        self.rejected = Counter("invoker_rejected", "requests refused by the admission queue", ["reason"],
                                registry=self.registry)
        self.latency = Histogram(
            "invoker_request_duration_seconds", "chat completion latency (admission to last token)",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.first_token = Histogram(
            "invoker_time_to_first_token_seconds", "admission to first generated text", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.running = Gauge("invoker_generations_running", "generations running now", registry=self.registry)
        self.waiting = Gauge("invoker_requests_waiting", "requests waiting for a generation slot", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestCounter:
    """ASGI middleware counting every answered request by route and status (413s and 404s included)."""

    def __init__(self, app, *, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(route=label, status=str(status)).inc()
