"""The base of the gateway's plain ASGI middlewares (plain, so streamed bodies pass through unbuffered)."""

from __future__ import annotations


class HttpMiddleware:
    """Wraps `app`; `handle` sees each HTTP request, and lifespan (and any other) scopes pass straight through."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        """One HTTP request: answer it, or pass it on to `self.app`."""
        raise NotImplementedError
