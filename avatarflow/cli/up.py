"""``avatarflow up``: the whole distributed stack on this machine, one process per service,
until Ctrl-C or SIGTERM; a service that dies is started again with backoff, as Kubernetes
would. ``--colocate`` runs the refiner inside the renderer's processes (no refiner process);
``--colocate motion-gen`` motion-gen inside the audio-encoder's, ``--colocate all`` both."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from types import FrameType

from avatarflow.contracts.errors import InvalidInput
from avatarflow.dev.cluster import (
    COLOCATE_HOSTS,
    GATEWAY,
    SERVICES,
    STAGE_SERVICES,
    LocalCluster,
    RestartEvent,
    RestartPolicy,
    guests,
)
from avatarflow.dev.net import port_is_free
from avatarflow.runtime import registry
from avatarflow.runtime.profiles import PROFILES

DEFAULT_PORT = registry.GATEWAY.port
# --colocate's choices: one guest stage, or every one (bare --colocate: the refiner).
COLOCATE_CHOICES = {**{g: (g,) for g in COLOCATE_HOSTS}, "all": tuple(COLOCATE_HOSTS)}


class _Stop(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"gateway port, default {DEFAULT_PORT}")
    p.add_argument("--redis", help="URL of an existing Redis (default: a private redis-server)")
    p.add_argument("--replicas", nargs="+", default=[], metavar="SERVICE=N",
                   help=f"processes per service ({', '.join(SERVICES)}), default 1 each")
    p.add_argument("--log-dir", help="per-process logs (default: a new temporary directory)")
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help="engines and weights of every stage from one weights root (--weights)")
    p.add_argument("--weights", help="the profile's weights root, as its publishers lay it out")
    p.add_argument("--timeout", type=float, default=90.0,
                   help="seconds to wait for every service to report SERVING")
    p.add_argument("--colocate", nargs="?", const="refiner", choices=sorted(COLOCATE_CHOICES),
                   help="run a stage inside the processes of the stage before it, messages "
                        "passed in memory instead of over Redis: refiner (the default) inside "
                        "each renderer (frames as pixels, not JPEG), motion-gen inside each "
                        "audio-encoder, or all of them; the guest has no process and "
                        "--replicas HOST=N scales both")
    p.add_argument("--no-restart", action="store_true",
                   help="leave a service that dies stopped (default: restart it with backoff, "
                        "0.5 s doubling to 10 s, under the same consumer name)")
    sec = p.add_argument_group("security of the gateway (default: plaintext, no keys, "
                               "loopback only)")
    sec.add_argument("--api-keys", metavar="FILE",
                     help="require API keys: the tenants' hashed keys (avatarflow keys new)")
    sec.add_argument("--tls-cert", metavar="FILE", help="serve TLS: certificate chain (PEM)")
    sec.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    sec.add_argument("--tls-client-ca", metavar="FILE",
                     help="mutual TLS: clients must present a certificate this CA signed")


def gateway_env(args: argparse.Namespace) -> dict[str, str]:
    """The gateway-only settings the security flags ask for (files checked, paths absolute)."""
    files = {"--api-keys": getattr(args, "api_keys", None),
             "--tls-cert": getattr(args, "tls_cert", None),
             "--tls-key": getattr(args, "tls_key", None),
             "--tls-client-ca": getattr(args, "tls_client_ca", None)}
    for flag, path in files.items():
        if path and not Path(path).is_file():
            raise InvalidInput(f"{flag}: no such file {path}")
    if bool(files["--tls-cert"]) != bool(files["--tls-key"]):
        raise InvalidInput("--tls-cert and --tls-key go together")
    if files["--tls-client-ca"] and not files["--tls-cert"]:
        raise InvalidInput("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
    names = {"--api-keys": "API_KEYS_FILE", "--tls-cert": "TLS_CERT", "--tls-key": "TLS_KEY",
             "--tls-client-ca": "TLS_CLIENT_CA"}
    env = {f"AVATARFLOW_GATEWAY_{names[flag]}": str(Path(path).resolve())
           for flag, path in files.items() if path}
    if files["--api-keys"]:
        env["AVATARFLOW_GATEWAY_AUTH"] = "required"
    return env


def security_line(env: dict[str, str]) -> str:
    """How the gateway is exposed, for the table."""
    tls = ("mutual TLS" if "AVATARFLOW_GATEWAY_TLS_CLIENT_CA" in env else
           "TLS" if "AVATARFLOW_GATEWAY_TLS_CERT" in env else "plaintext (no TLS)")
    keys = (f"API keys from {env['AVATARFLOW_GATEWAY_API_KEYS_FILE']}"
            if "AVATARFLOW_GATEWAY_API_KEYS_FILE" in env else "no API keys")
    return f"{tls}, {keys}"


def parse_replicas(items: list[str]) -> dict[str, int]:
    replicas: dict[str, int] = {}
    for item in items:
        service, _, count = item.partition("=")
        if service not in SERVICES:
            raise InvalidInput(f"--replicas: unknown service {service!r}; "
                               f"known: {', '.join(SERVICES)}")
        try:
            replicas[service] = int(count)
        except ValueError:
            raise InvalidInput(f"--replicas takes SERVICE=N, got {item!r}") from None
        if replicas[service] < 1:
            raise InvalidInput(f"--replicas: {service} needs at least 1, got {count}")
    return replicas


def run(args: argparse.Namespace) -> int:
    """Starts the cluster, waits for a stop signal, stops it; returns 0 after a clean stop."""
    replicas = parse_replicas(args.replicas)
    colocate = colocated(getattr(args, "colocate", None))
    for guest in colocate:
        if guest in replicas:
            host = COLOCATE_HOSTS[guest]
            raise InvalidInput(f"--colocate runs the {guest} inside the {host} processes: "
                               f"drop {guest}= from --replicas and scale the {host} instead")
    profile, weights = getattr(args, "profile", None), getattr(args, "weights", None)
    if weights and not profile:
        raise InvalidInput("--weights is the root of a profile: name it with --profile")
    if not port_is_free(args.port):
        raise InvalidInput(f"port {args.port} is in use: pick another with --port")
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            raise _Stop

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    restart = None if getattr(args, "no_restart", False) else RestartPolicy()
    env = gateway_env(args)
    cluster = LocalCluster(replicas=replicas, redis_url=args.redis, log_dir=args.log_dir,
                           gateway_port=args.port, profile=profile, weights_root=weights,
                           restart=restart, on_restart=_print_restart, env=env,
                           colocate=colocate)
    try:
        print(f"starting {sum(cluster.replicas(s) for s in SERVICES)} services, "
              f"logs in {cluster.log_dir}", flush=True)
        cluster.start(timeout=args.timeout)
        _print_table(cluster, env)
        _watch(cluster, supervised=restart is not None)
    except _Stop:
        pass
    finally:
        stopping = True
        print("stopping (services drain first)", flush=True)
        cluster.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("stopped", flush=True)
    return 0


def colocated(choice: bool | str | None) -> tuple[str, ...]:
    """The stages ``--colocate [CHOICE]`` runs inside another's processes (True: bare)."""
    if choice is None or isinstance(choice, bool):
        return guests(bool(choice))
    if choice not in COLOCATE_CHOICES:
        raise InvalidInput(f"--colocate {choice!r}: choose from "
                           f"{', '.join(sorted(COLOCATE_CHOICES))}")
    return COLOCATE_CHOICES[choice]


def _print_table(cluster: LocalCluster, env: dict[str, str]) -> None:
    rows = []
    for s in (GATEWAY, *STAGE_SERVICES):
        if s in cluster.colocate:
            rows.append((s, f"inside each {cluster.runs_in(s)} process (--colocate)"))
        rows += [(f"{s}-{i}" if cluster.replicas(s) > 1 else s,
                  f"{cluster.target(s, i)}  metrics {cluster.metrics_url(s, i)}")
                 for i in range(cluster.replicas(s))]
    rows += [("redis", cluster.redis_url), ("logs", str(cluster.log_dir)),
             ("security", security_line(env))]
    width = max(len(name) for name, _ in rows)
    print("avatarflow is up:")
    for name, address in rows:
        print(f"  {name:<{width}}  {address}")
    tls = ""
    if "AVATARFLOW_GATEWAY_TLS_CERT" in env:
        tls = " --tls --ca CA.pem" + (" --cert CLIENT.pem --key CLIENT.key"
                                      if "AVATARFLOW_GATEWAY_TLS_CLIENT_CA" in env else "")
    key = "AVATARFLOW_API_KEY=KEY " if "AVATARFLOW_GATEWAY_API_KEYS_FILE" in env else ""
    print(f"try: {key}avatarflow client --target {cluster.gateway_target}{tls} --image PORTRAIT "
          "--audio SPEECH --out out/live.mp4")
    print("Ctrl-C stops every service", flush=True)


def _print_restart(event: RestartEvent) -> None:
    """One line per restart (the supervisor logs the log tail too)."""
    last = next((line for line in reversed(event.log_tail.splitlines()) if line.strip()), "")
    print(f"restarting {event.name} in {event.delay:g} s (restart {event.restarts}): "
          f"exited with code {event.code}; last log line: {last[:200]}", flush=True)


def _watch(cluster: LocalCluster, supervised: bool) -> None:
    """Waits for a signal; without supervision, reports once any service that exits."""
    reported: set[tuple[str, int]] = set()
    while True:
        time.sleep(0.5)
        if supervised:
            continue
        for s in SERVICES:
            for i in range(cluster.replicas(s)):
                code = cluster.returncode(s, i)
                if code is not None and (s, i) not in reported:
                    reported.add((s, i))
                    print(f"warning: {s}-{i} exited with code {code}; its log ends:\n"
                          f"{cluster.log_tail(s, i, 10)}", flush=True)
