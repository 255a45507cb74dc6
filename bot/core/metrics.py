"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inbound = Counter(
            "relais_inbound_total", "Inbound events by channel and outcome",
            ["channel", "outcome"], registry=self.registry,
        )
        self.inbound_limited = Counter(
            "relais_inbound_limited_total",
            "Inbound messages past RELAIS_SENDER_LIMIT (stored, not answered one by one)",
            ["channel"], registry=self.registry,
        )
        self.outbound = Counter(
            "relais_outbound_total", "Outbox sends by channel and resulting status",
            ["channel", "status"], registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "relais_outbox_depth", "Outbox rows by status (queued, sending, in_doubt)",
            ["status"], registry=self.registry,
        )
        self.inbox_depth = Gauge(
            "relais_inbox_depth", "Inbox rows waiting to be processed (pending) or parked",
            ["state"], registry=self.registry,
        )
        self.inbox_lag = Gauge(
            "relais_inbox_lag_seconds",
            "Age of the oldest inbox row not yet processed (0 when the inbox is empty)",
            registry=self.registry,
        )
        self.inbox_failures = Counter(
            "relais_inbox_failures_total",
            "Failed attempts at processing an inbox row (retried, or parked for good)",
            ["kind", "outcome"], registry=self.registry,
        )
        self.send_latency = Histogram(
            "relais_send_latency_seconds", "Provider call duration", ["channel"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=self.registry,
        )
