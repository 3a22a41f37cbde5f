"""One frozen settings object per service, read from the environment once at start-up.

``AVATARFLOW_<NAME>`` sets a value for every service; ``AVATARFLOW_<SERVICE>_<NAME>`` (service
name upper-cased, dashes as underscores) overrides it for one service. Command-line flags of
``avatarflow serve`` override both. Bad values stop the service at start-up with a message
naming the variable.

``AVATARFLOW_PROFILE`` + ``AVATARFLOW_WEIGHTS_ROOT`` pick a stage's engine, weights and engine
options from one weights root (avatarflow.runtime.profiles); what is set explicitly still
wins: an explicit engine other than the profile's takes nothing from it, an explicit
``weights`` replaces the profile's directory, explicit ``engine_options`` items replace the
profile's items of the same name.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime import profiles, registry

# Derived from the registry, where every service is declared once.
SERVICES = registry.NAMES
DEFAULT_PORTS = {s.name: s.port for s in registry.SERVICES}


@dataclass(frozen=True)
class Settings:
    service: str
    port: int = 0  # gRPC port; 0 = the service's default
    listen_host: str = "[::]"  # address the gRPC port binds ("127.0.0.1": this host only)
    # A second, plaintext port serving only grpc.health.v1, for kubelet's gRPC probes, which
    # cannot speak TLS; 0 = none (the Helm chart sets it when the gateway's port has TLS).
    health_port: int = 0
    metrics_port: int = 0  # Prometheus /metrics port; 0 = the gRPC port + 1000, -1 = off
    redis_url: str = "redis://127.0.0.1:6379/0"
    engine: str = ""  # stage engine; empty = the default engine
    # Engine options, passed to the engine only when set: a local weights directory (never
    # downloaded), torch device and precision, a Triton server to run the network on, and
    # "name=value,name=value" for anything engine-specific (e.g. "steps=6,guidance=2.5").
    weights: str = ""
    device: str = ""
    dtype: str = ""
    triton_url: str = ""
    engine_options: str = ""
    # An engine profile and its weights root: defaults for engine, weights, engine_options.
    profile: str = ""
    weights_root: str = ""
    consumer: str = ""  # consumer name in <stage>-workers; empty = <host>-<pid>
    # Session ownership: a replica refreshes its liveness every heartbeat; one silent for
    # claim_idle_ms (the takeover time) is presumed dead and its sessions are taken over. A
    # crash then freezes its sessions about that long; but a live replica stalled that long
    # (GC pause, CPU throttling, network blip) loses its sessions too (no frame is lost or
    # doubled; they re-warm elsewhere). Kubernetes with CPU limits: 250 / 2000.
    heartbeat_ms: int = 100
    claim_idle_ms: int = 500
    session_ttl_s: float = 60.0  # session keys and streams expire after this long idle
    # Entries a session stream keeps for a reader that is behind or down (approximate trim;
    # acknowledged entries are deleted at once): 512 is 10 s of 20 ms audio chunks, 17 s of
    # frames, at most ~38 MB of 512x768 JPEG frames per picture stream.
    stream_maxlen: int = 512
    # The bus's shards: a session's keys and the join streams it is announced on all hash to
    # one shard's slot, so every script touches one slot (Redis Cluster). 0 = 1 on a single
    # Redis, 16 on a cluster (redis+cluster:// or rediss+cluster:// URLs). Every process of
    # a deployment must use the same count; the first one records it in Redis.
    bus_shards: int = 0
    avatar_ttl_s: float = 3600.0  # cached portrait analyses
    frame_budget_ms: float = 500.0  # a frame is late this long after its audio is due
    shed_after_ms: float = 100.0  # shed a frame this far past due if a newer one waits; 0 = off
    stall_ms: float = 150.0  # audio this far behind the clock is filled with silence
    summary_s: float = 2.0  # period of latency summaries sent to the client
    max_message_mb: float = 16.0  # largest gRPC message accepted (a portrait upload)
    # The renderer's gRPC address (gateway).
    renderer_target: str = f"127.0.0.1:{registry.service('renderer').port}"
    grace_s: float = 5.0  # drain time on SIGTERM
    threads: int = 1  # worker threads for a stage's engine (numpy/cv2)
    # Co-location: "refiner" on the renderer service runs the refiner in the same process,
    # frames passed in memory instead of over Redis (one JPEG round trip and one bus hop less);
    # "motion-gen" on the audio-encoder service does the same for the features.
    colocate: str = ""
    # The asyncio event loop of service processes: "uvloop" (libuv, cheaper per socket
    # operation) or "asyncio" (the standard library's).
    event_loop: str = "uvloop"
    # -- the bus's Redis: a password (AUTH) and, with a rediss:// URL, the CA that signed the
    # server's certificate plus an optional client certificate and key (Redis mTLS).
    redis_password: str = ""
    redis_tls_ca: str = ""
    redis_tls_cert: str = ""
    redis_tls_key: str = ""
    # -- the gateway's exposure (avatarflow_gateway) -------------------------------------
    # API keys: "required" (default) refuses to start without a keys file; "off" serves
    # anyone who can reach the port (the local `avatarflow up` on loopback).
    auth: str = "required"
    api_keys_file: str = ""  # tenants and their hashed keys (YAML), reloaded when it changes
    keys_reload_s: float = 5.0  # how often the keys and certificate files are checked
    # TLS on the public port: certificate chain and key (PEM), reloaded when they change;
    # a client CA makes it mutual TLS (clients must present a certificate it signed).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Admission: sessions one gateway runs at once (it reports NOT_SERVING when full), and the
    # defaults of the per-tenant quotas a keys file can override per tenant.
    max_sessions: int = 0  # 0 = 13 per usable core (avatarflow_gateway.capacity)
    tenant_max_sessions: int = 16
    tenant_max_avatars: int = 1000
    register_per_minute: float = 60.0  # RegisterAvatar calls per tenant (token bucket)
    # Slow clients: frames waiting longer than max_lag_ms to be sent are dropped; at most
    # out_frames / out_mb wait per session; a client that has taken no frame for evict_s
    # while frames wait is ended; a session without audio from its client for idle_s ends
    # (0 = never).
    max_lag_ms: float = 500.0
    out_frames: int = 30
    out_mb: float = 16.0
    evict_s: float = 5.0
    idle_s: float = 120.0
    # When a session's audio goes on the bus (avatarflow.session.packing): held until it lets
    # the audio encoder make a new frame, by the look-ahead of the encoder's engine ("mel",
    # "pcm", ...) or a number of milliseconds; "auto" = the engine the profile names, else
    # the default; "off" = each client chunk as it comes.
    audio_lead: str = "auto"

    def __post_init__(self) -> None:
        if self.service not in SERVICES:
            raise InvalidInput(f"unknown service {self.service!r}; services: {', '.join(SERVICES)}")
        checks = {
            "port": 0 <= self.port <= 65535, "health_port": 0 <= self.health_port <= 65535,
            "metrics_port": -1 <= self.metrics_port <= 65535,
            "heartbeat_ms": self.heartbeat_ms > 0,
            "claim_idle_ms": self.claim_idle_ms >= 2 * self.heartbeat_ms,
            "session_ttl_s": self.session_ttl_s > 0, "stream_maxlen": self.stream_maxlen >= 16,
            "avatar_ttl_s": self.avatar_ttl_s > 0, "frame_budget_ms": self.frame_budget_ms > 0,
            "shed_after_ms": self.shed_after_ms >= 0,
            "stall_ms": self.stall_ms > 0, "summary_s": self.summary_s > 0,
            "max_message_mb": 0 < self.max_message_mb <= 256,
            "grace_s": self.grace_s >= 0,
            "threads": self.threads >= 1,
            "redis_url": self.redis_url.startswith(("redis://", "rediss://", "unix://",
                                                    "redis+cluster://", "rediss+cluster://")),
            "bus_shards": 0 <= self.bus_shards <= 16384,
            "colocate": self.colocate in ("", "motion-gen", "refiner"),
            "event_loop": self.event_loop in ("uvloop", "asyncio"),
            "auth": self.auth in ("required", "off"),
            "keys_reload_s": self.keys_reload_s > 0,
            "tls_key": bool(self.tls_cert) == bool(self.tls_key),
            "tls_client_ca": not self.tls_client_ca or bool(self.tls_cert),
            "redis_tls_key": bool(self.redis_tls_cert) == bool(self.redis_tls_key),
            "max_sessions": self.max_sessions >= 0,
            "tenant_max_sessions": self.tenant_max_sessions >= 1,
            "tenant_max_avatars": self.tenant_max_avatars >= 1,
            "register_per_minute": self.register_per_minute > 0,
            "max_lag_ms": self.max_lag_ms > 0, "out_frames": self.out_frames >= 1,
            "out_mb": self.out_mb > 0, "evict_s": self.evict_s > 0, "idle_s": self.idle_s >= 0,
        }
        if self.audio_lead != "auto":
            # (the session layer imports this module: imported here, not at the top)
            from avatarflow.session.packing import parse_lead
            try:
                parse_lead(self.audio_lead)
            except InvalidInput as exc:
                raise InvalidInput(f"{self.service}: invalid setting audio_lead="
                                   f"{self.audio_lead!r}: {exc}") from None
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise InvalidInput(f"{self.service}: invalid setting(s): " + ", ".join(
                f"{k}={getattr(self, k)!r}" for k in bad))

    @property
    def grpc_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.service]

    @property
    def metrics_http_port(self) -> int | None:
        """Where /metrics is served; None when switched off."""
        if self.metrics_port < 0:
            return None
        return self.metrics_port or self.grpc_port + 1000

    @property
    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"

    @classmethod
    def load(cls, service: str, environ: Mapping[str, str] | None = None,
             **overrides: Any) -> Settings:
        """Defaults, then the environment, then ``overrides`` (None values are ignored)."""
        env = os.environ if environ is None else environ
        prefix = "AVATARFLOW_" + service.upper().replace("-", "_") + "_"
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "service":
                continue
            for key in (f"AVATARFLOW_{f.name.upper()}", prefix + f.name.upper()):
                if key in env:
                    values[f.name] = _parse(key, env[key], type(f.default))
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("profile") and service in registry.STAGE_NAMES:
            _apply_profile(service, values)
        return cls(service=service, **values)

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword options for the stage's engine: only what was set."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ("weights", "device", "dtype",
                                                             "triton_url") if getattr(self, k)}
        for item in filter(None, (p.strip() for p in self.engine_options.split(","))):
            name, sep, raw = item.partition("=")
            if not sep or not name.strip().isidentifier():
                raise InvalidInput(f"{self.service}: engine_options item {item!r} is not "
                                   "name=value")
            out[name.strip()] = _value(raw.strip())
        return out

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _apply_profile(service: str, values: dict[str, Any]) -> None:
    """Fills engine, weights and engine_options from the profile where they are not set."""
    p = profiles.validate(values["profile"], values.get("weights_root", ""))
    engine, options = p.stage_options(service, values["weights_root"])
    if not engine or (values.get("engine") or engine) != engine:
        return  # left to its default, or explicitly another engine
    values["engine"] = engine
    weights = options.pop("weights", "")
    if weights and not values.get("weights"):
        values["weights"] = weights
    items = [f"{k}={v}" for k, v in options.items()]
    values["engine_options"] = ",".join(filter(None, [*items, values.get("engine_options")]))


def _value(raw: str) -> Any:
    """An engine option's value: int, float, true/false, or the text itself."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw.lower(), raw)


def _parse(key: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInput(f"{key}={raw!r} is not a valid {kind.__name__}") from None
