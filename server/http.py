"""Streamable HTTP serving: loopback as the SDK serves it; any other bind address only with a bearer token.

On 127.0.0.1 / localhost / ::1 the SDK's own protection applies (Host and Origin must be loopback
names). On any other address every tool would be open to the network, so the server refuses to start
without a token (`--token` / ML_EXPERT_TOKEN), checks `Authorization: Bearer <token>` on every
request (constant-time compare), and allows only the Host / Origin names it was told about.
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
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
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


def http_app(mcp: MCPServer, host: str, port: int, token: str | None, extra_hosts: list[str]) -> Any:
    """The ASGI app to serve: the SDK's on loopback (token optional), guarded and token-checked elsewhere."""
    require_token(host, token)
    security = None
    if not is_loopback(host):
        names = allowed_names(host, extra_hosts)
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[n for name in names for n in (name, f"{name}:{port}")],
            allowed_origins=[f"{s}://{name}{p}" for name in names for s in ("http", "https") for p in ("", f":{port}")],
        )
        log.warning("serving on %s: every tool is reachable by anyone who holds the token", host)
    app = mcp.streamable_http_app(transport_security=security, host=host)
    return BearerToken(app, token) if token else app


def serve_http(mcp: MCPServer, host: str, port: int, token: str | None, extra_hosts: list[str]) -> None:
    import uvicorn

    uvicorn.run(http_app(mcp, host, port, token, extra_hosts), host=host, port=port, log_level="warning")
