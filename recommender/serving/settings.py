"""Settings of the serving process (``movierec serve``): one frozen object from
``MOVIEREC_*`` variables, built once per process (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass

from movierec.settings import (
    KafkaSettings,
    RedisSettings,
    ServedTopicSettings,
    SettingsError,
    WireSettings,
    env_name,
    setting,
)
from recommender.serving.client_limit import Network, parse_networks
from recommender.settings import ExperimentsSettings, RegistrySettings

NETWORK_SETTINGS = {
    "metrics": "serve_metrics_networks",
    "private": "serve_private_networks",
    "exempt": "serve_client_limit_exempt",
    "proxies": "serve_trusted_proxies",
}
"""``ServeSettings.networks(which)``: the settings that hold comma-separated CIDRs."""


@dataclass(frozen=True)
class ServeSettings(KafkaSettings, RedisSettings, WireSettings, RegistrySettings,
                    ServedTopicSettings, ExperimentsSettings):
    """How the recommendation service listens, which models it serves, and its budgets."""

    serve_host: str = setting("0.0.0.0", "Address the service binds (0.0.0.0: reachable by graders)")
    serve_port: int = setting(8082, "Port of the recommendation API (the course calls :8082)",
                              min=1, max=65535)
    serve_workers: int = setting(2, "gunicorn worker processes (one per core is the sweet spot)",
                                 min=1, max=64)
    serve_worker_class: str = setting(
        "sync", "gunicorn worker class: sync (gunicorn's, shedding at accept time) or gthread "
        "(docs/benchmarks.md compares them)",
        choices=("sync", "gthread"),
    )
    serve_threads: int = setting(1, "Threads per worker (gthread only)", min=1, max=64)
    serve_backlog: int = setting(
        2048, "Listen queue length (capped by net.core.somaxconn). Past it Linux drops new "
        "connections' SYNs and clients retry after 1 s, past the deadline: keep it above the "
        "connections the service must drain (docs/serving.md, Overload)",
        min=1, max=65535,
    )
    serve_alias: str = setting("champion", "Registry alias served outside any experiment")
    serve_poll_s: float = setting(
        1.0, "Seconds between checks of the registry aliases and the experiment file",
        min=0.05, max=3600,
    )
    serve_budget_ms: float = setting(
        100.0, "Internal time budget of /recommend; past it the answer is the popular list",
        min=1, max=600,
    )
    serve_shed_ms: float = setting(
        50.0, "Queue age (ms, from the kernel) at which /recommend answers the popular list at "
        "once, without Redis or the model (load shedding); 0 disables",
        min=0, max=600,
    )
    # Why 50 ms: the budget above counts queue time, so a request that waited >= the budget
    # degrades anyway (after a useless Redis read): the limit belongs below it. One admitted
    # at the limit still has 50 ms, room for a Redis timeout (25 ms) and the model (p99
    # < 1 ms), so it is personalized; and 50 ms is above the queueing of a saturated but
    # not overloaded service (p99 34 ms at 16 connections, docs/benchmarks.md). Shedding
    # early keeps the queue short: a shed answer skips Redis and the model (docs/serving.md).
    serve_refuse_ms: float = setting(
        500.0, "Queue age (ms, from the kernel) at which the sync worker resets a connection at "
        "accept, unanswered: an answer would reach the client past its 600 ms deadline, and "
        "draining the queue keeps the requests behind it in time; 0 disables",
        min=0, max=60_000,
    )
    serve_answer_at_accept: bool = setting(
        True, "The sync worker answers a plain GET /recommend/<id> itself, ahead of gunicorn's "
        "HTTP parser and the WSGI layer (docs/serving.md); false: only shed requests are",
    )
    serve_answer_cache_users: int = setting(
        50_000, "Users per worker whose last answers are reused while their stored state is "
        "unchanged (the state's digest from Redis, docs/serving.md); 0 disables",
        min=0, max=10_000_000,
    )
    serve_answer_cache_ttl_s: float = setting(
        300.0, "Seconds a reused answer lives at most (bounds the reuse of a model reloaded "
        "under the same version)", min=0.001, max=86400,
    )
    serve_redis_timeout_ms: float = setting(
        25.0, "Socket timeout of each Redis round trip on the request path", min=1, max=1000,
    )
    serve_breaker_failures: int = setting(
        5, "Consecutive Redis failures that open the circuit breaker", min=1, max=1000,
    )
    serve_breaker_reset_s: float = setting(
        2.0, "Seconds the breaker stays open before one trial request", min=0.01, max=600,
    )
    serve_list_size: int = setting(20, "Movies per answer (the API allows at most 20)", min=1, max=20)
    serve_max_user_id: int = setting(
        2_147_483_647, "Largest user id accepted; above it /recommend answers 400", min=1,
    )
    serve_admin_token: str = setting(
        "", "Bearer token of the admin endpoints (experiments, reload); empty: admin disabled"
    )
    serve_metrics_networks: str = setting(
        "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        "Client networks that may read /metrics without the admin token (loopback and the "
        "private ranges a Prometheus beside the service scrapes from; graders come from "
        "elsewhere), comma-separated CIDRs")
    serve_private_networks: str = setting(
        "127.0.0.0/8,::1/128",
        "Client networks that may read /provenance?user= (a user's last list) without the "
        "admin token, comma-separated CIDRs (loopback by default)")

    serve_walk_min_run: int = setting(
        30, "Run of consecutive user ids (each asked within MOVIEREC_SERVE_WALK_GAP_S of its "
        "neighbour) from which /recommend takes a request for a crawler's walk and answers the "
        "popular list (fallback scraping); 0 disables, else at least 2",
        min=0, max=1_000_000,
    )
    serve_walk_gap_s: float = setting(
        60.0, "Seconds within which a neighbouring user id must have been asked for a walk to go "
        "on", min=0.01, max=86_400,
    )
    serve_client_rate_per_s: float = setting(
        1000.0, "Sustained /recommend requests per second one client address may send before "
        "it is answered 429 (far above the whole course site's traffic); 0 disables",
        min=0, max=1_000_000,
    )
    serve_client_burst: int = setting(
        2000, "Requests one client address may send at once above its sustained rate",
        min=1, max=100_000_000,
    )
    serve_client_limit_exempt: str = setting(
        "127.0.0.0/8,::1/128",
        "Client networks never rate-limited, comma-separated CIDRs (loopback by default: the "
        "local simulator, load tests and benchmarks)")
    serve_trusted_proxies: str = setting(
        "", "Proxies whose X-Forwarded-For names the client for the rate limit, comma-separated "
        "CIDRs; empty: the TCP peer is the client and the header is never read")

    telemetry_buffer: int = setting(
        10_000, "Served records held per worker before new ones are dropped (and counted)",
        min=10, max=10_000_000,
    )
    telemetry_kafka_flush_ms: float = setting(
        500.0, "Most ms a served record waits in a worker before its batch goes to Kafka (sooner "
        "once 500 wait); each batch costs the worker's producer about as much as a few hundred "
        "answers, whatever its size (docs/benchmarks.md)",
        min=1, max=10_000,
    )
    provenance_ttl_days: float = setting(
        7.0, "Days a served record stays retrievable by /provenance", min=0.01, max=365,
    )

    def networks(self, which: str) -> tuple[Network, ...]:
        """A setting of comma-separated CIDRs parsed (``which``: a key of
        ``NETWORK_SETTINGS``); ``SettingsError`` naming the variable on a bad CIDR."""
        name = NETWORK_SETTINGS[which]
        try:
            return parse_networks(getattr(self, name))
        except ValueError as exc:
            raise SettingsError(f"{env_name(name)}: {exc}") from None

    def __post_init__(self) -> None:
        for which in NETWORK_SETTINGS:  # a bad CIDR fails at start, not at the first request
            self.networks(which)
        if self.serve_refuse_ms and self.serve_refuse_ms <= self.serve_shed_ms:
            raise SettingsError(f"{env_name('serve_refuse_ms')}={self.serve_refuse_ms:g} is not above "
                                f"{env_name('serve_shed_ms')}={self.serve_shed_ms:g}: a request must be "
                                "shed (answered) before it is refused")
        if self.serve_walk_min_run == 1:
            raise SettingsError(f"{env_name('serve_walk_min_run')}=1: every request would be a "
                                "walk; use 0 to disable the walk guard, or at least 2")
