"""Access control and TLS for the service's HTTP front.

Policy, in one place:

- A bearer token (``--token-file PATH`` or ``$GRADWATCH_TOKEN``) is required
  on ingest and on the query API whenever one is configured. ``/healthz`` is
  always open (load balancers and Kubernetes probes carry no secrets);
  ``/metrics`` is open unless ``--protect-metrics`` is given.
- ``gradwatch serve`` refuses to listen on anything but loopback without a
  token, unless ``--insecure`` says so explicitly.
- Tokens are compared in constant time (over their SHA-256 digests, so the
  comparison does not leak the length either) and never logged: the
  :class:`Token` object's ``repr`` hides the value.

Everything on the wire is JSON; no endpoint reads pickle or any other format
that can execute code.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web

TOKEN_ENV = "GRADWATCH_TOKEN"
#: Paths that never need a token.
OPEN_PATHS = frozenset({"/healthz"})


class AuthError(ValueError):
    """A token or TLS file cannot be used; the message says which and why."""


class Token:
    """A shared secret whose value never appears in a repr, a log line or a traceback's locals."""

    __slots__ = ("_digest", "_value")

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not value:
            raise AuthError("the token is empty")
        if any(c.isspace() or not c.isprintable() for c in value):
            raise AuthError("the token must be one line of printable characters without spaces")
        self._value = value
        self._digest = hashlib.sha256(value.encode()).digest()

    def matches(self, presented: str) -> bool:
        """Constant-time comparison with a presented token."""
        return hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "replace")).digest(), self._digest)

    def reveal(self) -> str:
        """The value, for an Authorization header."""
        return self._value

    def __repr__(self) -> str:
        return "Token(***)"

    __str__ = __repr__


def load_token(token_file: str | None, environ: Mapping[str, str] | None = None) -> Token | None:
    """The token from ``token_file`` if given, else from ``$GRADWATCH_TOKEN``, else None."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if token_file:
        try:
            text = Path(token_file).read_text()
        except OSError as exc:
            raise AuthError(f"cannot read token file {token_file}: {exc.strerror or exc}") from exc
        try:
            return Token(text)
        except AuthError as exc:
            raise AuthError(f"token file {token_file}: {exc}") from None
    value = env.get(TOKEN_ENV)
    if value is None:
        return None
    try:
        return Token(value)
    except AuthError as exc:
        raise AuthError(f"${TOKEN_ENV}: {exc}") from None


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or "" (all interfaces): assume reachable


def listen_policy_error(host: str, token: Token | None, insecure: bool) -> str | None:
    """Why the service must not start on ``host`` as configured, or None when it may."""
    if token is None and not insecure and not is_loopback(host):
        return (
            f"refusing to listen on {host!r} without a token: anyone who can reach it could send reports and "
            f"read every run. Give --token-file PATH (or ${TOKEN_ENV}), or --insecure to accept that."
        )
    return None


def ssl_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """A server TLS context from PEM files, or None when neither is given."""
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        raise AuthError("TLS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise AuthError(f"cannot load TLS certificate {cert_file} / key {key_file}: {exc}") from exc
    return context


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_middleware(
    token: Token, *, protect_metrics: bool, on_refused: Callable[[web.Request], None] | None = None
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """aiohttp middleware answering 401 to requests without the bearer token."""
    open_paths = OPEN_PATHS if protect_metrics else OPEN_PATHS | {"/metrics"}

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.matches(presented.strip()):
            if on_refused is not None:
                on_refused(request)
            # The reason is deliberately the same for a missing and a wrong token.
            return web.json_response(
                {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="gradwatch"'},
            )
        return await handler(request)

    return require_token
