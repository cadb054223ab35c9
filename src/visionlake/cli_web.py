"""`visionlake serve`: the web dashboard (see `visionlake.web`).

FastAPI, uvicorn and Jinja2 come with the `dashboard` extra and are imported inside the command only,
so CLI start-up stays fast and a missing extra is a clear error (exit 2) naming the fix.
"""

from typing import Annotated

import typer

from .cli_common import count_option, existing_lake
from .errors import InputError, MissingDependency
from .output import err_console, esc

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def register(app: typer.Typer) -> None:
    """Add `serve` to `app` (once: calling it again changes nothing)."""
    if any(c.name == "serve" for c in app.registered_commands):
        return
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option("--host", help="Address to listen on; anything but localhost needs --token"),
    ] = "127.0.0.1",
    port: Annotated[int, count_option("Port to listen on", "--port", max=65535)] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="VISIONLAKE_TOKEN",
            help="Access token: every page, API call and image then needs it (Bearer header or /login)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the web dashboard: overview, gallery, frames, reports, compare, SQL console, live view.

    Read-only: it changes nothing in the lake. Every page has a JSON twin under /api/.
    """
    token = token or None
    if host not in LOCAL_HOSTS and not token:
        raise InputError(
            f"refusing to serve on {host!r} without a token: anyone who can reach it could read every "
            "frame; set --token or VISIONLAKE_TOKEN, or listen on 127.0.0.1"
        )
    try:
        import fastapi  # noqa: F401
        import jinja2  # noqa: F401
        import uvicorn
    except ImportError as e:
        err = MissingDependency("the web dashboard (visionlake serve)", "dashboard", e.name)
        err.args = (f"{err}; in a checkout: scripts/setup.sh dashboard",)
        raise err from e
    from .web.app import create_app

    lake = existing_lake(ctx)
    app = create_app(lake, token=token)
    shown = f"[{host}]" if ":" in host else host
    err_console.print(
        f"visionlake dashboard on http://{esc(shown)}:{port}/"
        + (" (token required)" if token else "")
        + " - Ctrl-C stops it",
        highlight=False,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    finally:
        lake.close()
