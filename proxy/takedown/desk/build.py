"""The desk's aiohttp application, assembled: the shared parts (proxy/takedown/desk/app.py:
state, guard, headers, rendering) and every page module's routes (public.py, console.py,
customers.py). Its own module so the page modules can take what they share from app.py without
app.py importing them back."""

from __future__ import annotations

from aiohttp import web

from proxy.takedown.desk import console, customers, public, schema
from proxy.takedown.desk.app import DESK, DeskState, guard, headers, static, templates
from proxy.takedown.desk.limits import RateLimit
from proxy.takedown.service import TakedownService


def build_desk_app(service: TakedownService) -> web.Application:
    """The console and the public form for a service someone else starts and stops (the API
    app, or a test)."""
    cfg = service.cfg.desk
    clock = service.clock
    state = DeskState(
        service,
        templates(),
        {
            "form": RateLimit(
                cfg.form_max_posts, cfg.form_window_s, cfg.rate_limit_max_addresses, clock
            ),
            "signin": RateLimit(
                cfg.signin_max_failures, cfg.signin_window_s, cfg.rate_limit_max_addresses, clock
            ),
        },
    )
    app = web.Application(
        middlewares=[headers, guard], client_max_size=service.cfg.service.max_notice_bytes
    )
    app[DESK] = state
    app.router.add_get("/static/{name}", static)
    public.add_routes(app)
    console.add_routes(app)
    customers.add_routes(app)

    async def on_startup(app: web.Application) -> None:
        await service.store.run(schema.ensure)

    app.on_startup.append(on_startup)
    return app
