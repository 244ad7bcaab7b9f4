"""`songnet generate`: a playlist from seed songs, continued by the promoted model."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import structlog
import typer
from pydantic import ValidationError
from rich.table import Table

from service.cli.app import app, err_console, settings
from service.db import DatabaseError, open_database
from service.settings import PlaylistConfig, format_validation_error

log = structlog.get_logger(__name__)


@app.command()
def generate(
    ctx: typer.Context,
    seed: Annotated[
        list[str] | None,
        typer.Option("--seed", help='A seed: "Artist - Title" or spotify:track:… (repeat for several).', show_default=False),
    ] = None,
    length: Annotated[int, typer.Option("--length", min=1, max=500, help="Tracks in all, seeds included.")] = 30,
    temperature: Annotated[float, typer.Option("--temperature", min=0.01, max=5.0, help="Lower: safer picks; higher: more adventurous.")] = 1.0,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Sample among the K likeliest tracks.")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", min=0.01, max=1.0, help="Nucleus sampling (default 0.9).")] = None,
    rng_seed: Annotated[int | None, typer.Option("--rng-seed", help="Same seed, same playlist.")] = None,
    exclude_recent_days: Annotated[int, typer.Option("--exclude-recent-days", min=0, help="Leave out tracks heard in the last D days.")] = 0,
    at: Annotated[
        datetime | None,
        typer.Option("--at", help="Generate as of this time (ISO 8601, UTC unless it has an offset; default: now): the hour and weekday the model sees.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    as_m3u: Annotated[bool, typer.Option("--m3u", help="Print an M3U8 playlist on stdout.")] = False,
) -> None:
    """Continue seed songs into a playlist, each track with the reason it is there.

    With no --seed, the seeds are your most played tracks of recent weeks.
    """
    from service.playlists import (
        DEFAULT_TOP_P,
        EmptyLibraryError,
        NoModelError,
        PlaylistGenerator,
    )
    from songnet_core.generate import Sampling
    from songnet_core.seeds import SeedError, display_name

    if top_k is not None and top_p is not None:
        typer.echo("error: choose --top-k or --top-p, not both", err=True)
        raise typer.Exit(2)
    if as_json and as_m3u:
        typer.echo("error: choose --json or --m3u, not both", err=True)
        raise typer.Exit(2)
    s = settings(ctx)
    try:
        engine = open_database(s.data_dir)
    except DatabaseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        try:
            generator = PlaylistGenerator.from_promoted(engine, s)
        except (NoModelError, EmptyLibraryError) as exc:
            log.error("no playlist generated", error=str(exc))
            _fail(str(exc), as_json)
        seeds = list(seed or []) or generator.default_seeds()
        try:
            config = PlaylistConfig(
                name="songnet generate", seeds=seeds, length=length, temperature=temperature,
                exclude_recent_days=exclude_recent_days,
            )  # fmt: skip
        except ValidationError as exc:
            typer.echo(format_validation_error(exc), err=True)
            raise typer.Exit(2) from None
        sampling = Sampling(temperature, top_k=top_k, top_p=top_p if top_p is not None or top_k is not None else DEFAULT_TOP_P)
        try:
            now = None if at is None else int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())
            playlist = generator.generate(config, rng_seed=rng_seed, sampling=sampling, now=now)
        except SeedError as exc:
            log.error("seed not resolved", seed=exc.seed, problem=exc.problem)
            candidates = [display_name(t) for t in exc.candidates]
            lines = [f"error: {exc}"]
            if candidates:
                lines.append("closest tracks in your library:" if exc.problem != "ambiguous" else "candidates:")
                lines += [f"  {c}" for c in candidates]
            _fail("\n".join(lines), as_json, {"seed": exc.seed, "problem": exc.problem, "candidates": candidates}, raw=str(exc))
        except ValueError as exc:  # more seeds than --length
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    finally:
        engine.dispose()

    if as_json:
        doc = {
            "tracks": [{"artist": t.artist, "title": t.title, "uri": t.uri, "reason": t.reason} for t in playlist.tracks],
            "model_version": playlist.model_version,
            "ranker": playlist.ranker,
        }
        print(json.dumps(doc, ensure_ascii=False))
    elif as_m3u:
        from service.sinks import render_m3u8

        print(render_m3u8(playlist), end="")
    else:
        made_by = (
            f"model version {playlist.model_version}" if playlist.model_version is not None
            else "your simple rules: no trained model yet, `songnet status` says why"
        )  # fmt: skip
        table = Table(title=f"{len(playlist.tracks)} tracks ({made_by})")
        table.add_column("#", justify="right")
        table.add_column("artist")
        table.add_column("title")
        table.add_column("why")
        for i, t in enumerate(playlist.tracks, 1):
            table.add_row(str(i), t.artist, t.title, t.reason, style="bold" if t.is_seed else None)
        err_console.print(table)
    if playlist.note:
        err_console.print(playlist.note, markup=False, highlight=False)


def _fail(message: str, as_json: bool, extra: dict[str, Any] | None = None, *, raw: str | None = None) -> NoReturn:
    if as_json:
        print(json.dumps({"error": raw or message, **(extra or {})}, ensure_ascii=False))
    typer.echo(message, err=True)
    raise typer.Exit(1)
