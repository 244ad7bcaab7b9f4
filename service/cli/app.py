"""The `songnet` Typer application and its global options.

Each area registers its commands on `app` from its own module (`service/cli/<area>.py`);
`service/cli/__init__.py` imports them all. Commands get the settings through `settings(ctx)`.
Exit codes: 0 success, 1 a failure the command reports, 2 bad usage or invalid settings.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from service.logging import configure_logging
from service.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    name="songnet",
    help="Learns how you listen from your Spotify export and writes weekly playlists.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Progress bars, tables and messages for people go to stderr; stdout is kept for --json.
err_console = Console(stderr=True)
out_console = Console()


@app.callback()
def _global_options(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory (default: $SONGNET_DATA_DIR or ./data).", show_default=False),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="auto | json | console", show_default=False)
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug | info | warning | error", show_default=False)
    ] = None,
) -> None:
    try:
        s = load_settings(data_dir=data_dir, log_format=log_format, log_level=log_level)
    except SettingsError as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None
    configure_logging(s.log_format, s.log_level)
    ctx.obj = s


def settings(ctx: typer.Context) -> Settings:
    s = ctx.find_root().obj
    assert isinstance(s, Settings)
    return s


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
