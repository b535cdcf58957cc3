"""Streamable HTTP serving: on every bind address only known Host / Origin names; beyond loopback, a bearer token.

DNS-rebinding protection is always on, whatever the address: a request's Host (and Origin, when sent)
must name the bind address or a loopback name (any port on a loopback address, as the SDK allows on
127.0.0.1; the bound port elsewhere) or a name given with --allow-host; anything else gets 421 / 403.
(The SDK protects only 127.0.0.1, localhost and ::1 by itself: 127.0.0.2 answered any Host.) On a
non-loopback address every tool would be open to the network, so the server refuses to start without a
token (`--token` / ML_EXPERT_TOKEN) and checks `Authorization: Bearer <token>` on every request
(constant-time compare).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from ml_expert.memory.errors import InvalidInputError

log = logging.getLogger("ml_expert.server")
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BearerToken:
    """ASGI middleware: HTTP requests need `Authorization: Bearer <token>`; anything else gets 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.expected = app, token.encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scheme, _, given = dict(scope.get("headers") or []).get(b"authorization", b"").strip().partition(b" ")
            # the scheme is case-insensitive (RFC 7235: "bearer" is "Bearer"); the token is compared in constant time
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.expected):
                body = json.dumps({"error": "unauthorized", "detail": "Send Authorization: Bearer <token>."}).encode()
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def allowed_names(host: str, extra: list[str]) -> list[str]:
    """Host names a client may use: the bind address (every local address for 0.0.0.0 / ::), loopback, extras."""
    names = [*extra, *LOOPBACK_NAMES]
    if host in ("0.0.0.0", "::", ""):
        hostname = socket.gethostname()
        names += [hostname, *socket.gethostbyname_ex(hostname)[2]]
    else:
        names.append(f"[{host}]" if ":" in host else host)
    return list(dict.fromkeys(names))


def require_token(host: str, token: str | None) -> None:
    """A non-loopback bind address without a token is refused before anything starts."""
    if not is_loopback(host) and not token:
        raise InvalidInputError(
            f"Refusing to serve every tool on {host}: a non-loopback address needs a bearer token. Pass --token "
            "(or set ML_EXPERT_TOKEN) to a long random secret, and give it to your clients as "
            "'Authorization: Bearer <token>'. Or serve on 127.0.0.1."
        )


def transport_security(host: str, port: int, extra_hosts: list[str]) -> TransportSecuritySettings:
    """DNS-rebinding protection for any bind address: the Host / Origin names a request may carry."""
    names = allowed_names(host, extra_hosts)
    ports = ("", ":*") if is_loopback(host) else ("", f":{port}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}{p}" for name in names for p in ports],
        allowed_origins=[f"{s}://{name}{p}" for name in names for s in ("http", "https") for p in ports],
    )


def http_app(mcp: MCPServer, host: str, port: int, token: str | None, extra_hosts: list[str]) -> Any:
    """The ASGI app to serve: Host / Origin checked on every address, a bearer token required beyond loopback."""
    require_token(host, token)
    if not is_loopback(host):
        log.warning("serving on %s: every tool is reachable by anyone who holds the token", host)
    app = mcp.streamable_http_app(transport_security=transport_security(host, port, extra_hosts), host=host)
    return BearerToken(app, token) if token else app


def serve_http(mcp: MCPServer, host: str, port: int, token: str | None, extra_hosts: list[str]) -> None:
    import uvicorn

    uvicorn.run(http_app(mcp, host, port, token, extra_hosts), host=host, port=port, log_level="warning")
