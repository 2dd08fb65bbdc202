"""The built-in live page: static files served at ``/`` and the history endpoint behind them."""

from __future__ import annotations

from importlib import resources

#: The files the page is made of, with their content types; nothing else is served.
ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}


def asset(name: str) -> bytes:
    """The bytes of one of :data:`ASSETS` (package data, so a non-editable install has them too)."""
    if name not in ASSETS:
        raise KeyError(name)
    return resources.files(__name__).joinpath(name).read_bytes()
