"""Commands about Spotify: `auth` (sign in), `whoami` (check the sign-in), `sync` (write now).

Exit codes: 0 success; 1 a failure (the message says what and what to do); 2 Spotify not
configured or not signed in; `sync` 3 when nothing failed but Spotify asked to come back later.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Annotated, Any

import structlog
import typer

from service.cli.app import app, err_console, settings
from service.db import DatabaseError, open_database
from service.settings import PlaylistConfig, Settings
from service.spotify.auth import (
    RedirectListener,
    TokenFile,
    begin_sign_in,
    complete_sign_in,
    token_path,
)
from service.spotify.client import client_from_settings
from service.spotify.errors import AuthError, NotConfigured, SpotifyError
from service.spotify.sync import (
    SyncOutcome,
    SyncRun,
)

log = structlog.get_logger(__name__)

NOT_CONFIGURED = 2


def _fail(message: str, hint: str | None, code: int) -> typer.Exit:
    err_console.print(
        f"error: {message}" + (f"\n  {hint}" if hint else ""), markup=False, highlight=False
    )
    return typer.Exit(code)


def _require_configured(s: Settings) -> None:
    if not s.spotify_configured:
        raise _fail("Spotify is not configured", NotConfigured.hint, NOT_CONFIGURED)


def _wait_for_redirect(s: Settings, listen: bool | None, timeout: float) -> str:
    """The URL the browser was sent back to: pasted on stdin, or caught on the loopback port."""
    pasted: queue.Queue[str] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip():
                pasted.put(line.strip())
                return

    listener: RedirectListener | None = None
    if listen is not False:
        try:
            listener = RedirectListener(s.spotify_redirect_uri)
        except (ValueError, OSError) as exc:
            if listen:
                raise _fail(
                    f"cannot listen for the redirect: {exc}",
                    "paste the URL instead (--no-listen)",
                    1,
                ) from None
    threading.Thread(target=read_stdin, name="auth-stdin", daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        if listener is not None:
            listener.__enter__()
        while time.monotonic() < deadline:
            if listener is not None and listener.done.is_set() and listener.received:
                return listener.received
            try:
                return pasted.get(timeout=0.1)
            except queue.Empty:
                continue
    finally:
        if listener is not None:
            listener.__exit__(None, None, None)
    raise _fail(f"no redirect URL within {timeout:g} s", "run `songnet auth` again", 1)


@app.command()
def auth(
    ctx: typer.Context,
    redirected_url: Annotated[
        str | None,
        typer.Option(
            "--redirected-url",
            help="The URL the browser was sent back to; completes sign-in without a prompt.",
        ),
    ] = None,
    print_url: Annotated[
        bool,
        typer.Option(
            "--print-url",
            help="Print the sign-in URL on stdout and exit; finish with --redirected-url.",
        ),
    ] = False,
    listen: Annotated[
        bool | None,
        typer.Option(
            "--listen/--no-listen",
            help="Wait for the browser on the loopback redirect port (default: when the redirect URI is 127.0.0.1:PORT and the port is free).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the redirect.")
    ] = 600.0,
) -> None:
    """Sign in to Spotify (authorization code flow; works on a headless server)."""
    s = settings(ctx)
    _require_configured(s)
    try:
        engine = open_database(s.data_dir)
    except DatabaseError as exc:
        raise _fail(str(exc), None, 1) from None
    try:
        if redirected_url is None:
            request = begin_sign_in(s)
            if print_url:
                print(request.url)
                return
            err_console.print(
                "Open this URL in a browser, sign in and allow songnet:\n\n"
                f"  {request.url}\n\n"
                "Then paste here the whole URL the browser was sent back to "
                f"(it starts with {s.spotify_redirect_uri}; the page may fail to load, that is fine).",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            redirected_url = _wait_for_redirect(s, listen, wait)
        complete_sign_in(s, redirected_url, engine)
        profile = client_from_settings(s, engine).me()
    except AuthError as exc:
        log.error("spotify sign-in failed", error=str(exc), action=exc.hint)
        raise _fail(str(exc), exc.hint, 1) from None
    except SpotifyError as exc:
        log.error("spotify sign-in failed", error=str(exc), action=exc.hint)
        raise _fail(str(exc), exc.hint, 1) from None
    err_console.print(
        f"Signed in as {profile.get('display_name') or profile.get('id')} ({profile.get('id')}); "
        f"token kept in {token_path(s)}",
        markup=False,
        highlight=False,
    )


@app.command()
def whoami(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the Spotify sign-in: who songnet acts for."""
    s = settings(ctx)
    _require_configured(s)
    try:
        engine = open_database(s.data_dir)
        profile = client_from_settings(s, engine).me()
        token = TokenFile(token_path(s)).get_cached_token() or {}
    except DatabaseError as exc:
        raise _fail(str(exc), None, 1) from None
    except AuthError as exc:
        raise _fail(str(exc), exc.hint, NOT_CONFIGURED) from None
    except SpotifyError as exc:
        raise _fail(str(exc), exc.hint, 1) from None
    result = {
        "id": profile.get("id"),
        "display_name": profile.get("display_name"),
        "product": profile.get("product"),
        "scopes": sorted(str(token.get("scope") or "").split()),
        "token_file": str(token_path(s)),
    }
    if as_json:
        print(json.dumps(result))
    else:
        err_console.print(
            f"Signed in to Spotify as {result['display_name'] or result['id']} ({result['id']}), "
            f"{result['product'] or 'unknown'} account",
            markup=False,
            highlight=False,
        )


def _sign_in_problem(s: Settings, engine: Any) -> AuthError | None:
    try:
        client_from_settings(s, engine).tokens.access_token()
    except AuthError as exc:
        return exc
    except SpotifyError:
        pass  # transient: the sync retries it
    return None


def _configs(engine: Any, s: Settings) -> list[PlaylistConfig]:
    if s.playlists:
        return list(s.playlists)
    from service import playlists

    default = getattr(playlists, "default_playlist_config", None)
    return [default(engine, s)] if default is not None else []


@app.command()
def sync(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Generate and show; write nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per playlist on stdout.")
    ] = False,
) -> None:
    """Generate the configured playlists and write them to Spotify now."""
    from service.lock import cli_write_lock

    s = settings(ctx)
    try:
        engine = open_database(s.data_dir)
    except DatabaseError as exc:
        raise _fail(str(exc), None, 1) from None
    with cli_write_lock(s.data_dir, "sync", s.lock_wait_seconds):
        configs = _configs(engine, s)
        run = SyncRun()
        problem = None if dry_run else _sign_in_problem(s, engine)
        if problem is not None:
            # Nothing can be written: say so for each playlist without generating them.
            run.outcomes = [
                SyncOutcome(
                    c.id,
                    c.name,
                    "failed",
                    error=str(problem),
                    hint=problem.hint,
                    needs_sign_in=True,
                )
                for c in configs
            ]
        else:
            run = _generate_and_sync(engine, s, configs, dry_run=dry_run)
    for outcome in run:
        if as_json:
            print(json.dumps(outcome.as_dict()))
        else:
            err_console.print(outcome.line(), markup=False, highlight=False, soft_wrap=True)
    if not configs:
        err_console.print("no playlists configured (SONGNET_PLAYLISTS)", markup=False)
    raise typer.Exit(run.exit_code)


def _generate_and_sync(
    engine: Any, s: Settings, configs: list[PlaylistConfig], *, dry_run: bool
) -> SyncRun:
    from service.publish import generate, publish, sinks_from_settings

    # The daemon's use case: one library load; the files are always written.
    now = int(time.time())
    if dry_run:
        done = generate(engine, s, configs, now=now)  # a dry run keeps and writes nothing
    else:
        done = publish(engine, s, configs, sinks_from_settings(engine, s), now=now)
    by_id: dict[str, SyncOutcome] = {
        config.id: SyncOutcome(config.id, config.name, "failed", error=error)
        for config, error in done.failed
    }
    names = {p.config_id: p.name for p in done.playlists}
    for p in done.playlists:
        if dry_run:
            by_id[p.config_id] = SyncOutcome(
                p.config_id,
                p.name,
                "dry-run",
                tracks=len(p.tracks),
                unresolved=sum(1 for t in p.tracks if not t.uri),
            )
    for sink, outcomes in done.outcomes.items():
        for outcome in outcomes:
            if isinstance(outcome, SyncOutcome):
                by_id[outcome.config_id] = outcome
            elif outcome.status == "failed":  # the files could not be written
                by_id[outcome.config_id] = SyncOutcome(
                    outcome.config_id,
                    names[outcome.config_id],
                    "failed",
                    error=f"{sink}: {outcome.error}",
                )
    return SyncRun(outcomes=[by_id[c.id] for c in configs if c.id in by_id])
