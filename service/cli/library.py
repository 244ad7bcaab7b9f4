"""Commands about the local library: `info` (the data directory and database)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from sqlalchemy import func
from sqlmodel import Session, select

from service import tables
from service.cli.app import app, out_console, settings
from service.db import DatabaseError, database_path, open_database


@app.command()
def info(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where songnet keeps its data, and the database's schema version and size."""
    s = settings(ctx)
    try:
        engine = open_database(s.data_dir)
    except DatabaseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    with Session(engine) as session:
        plays = session.exec(select(func.count()).select_from(tables.PlayRow)).one()
        version = session.exec(select(tables.SchemaInfo.version)).one()
    path = database_path(s.data_dir)
    result = {"data_dir": str(s.data_dir), "database": str(path), "schema_version": version, "plays": plays}
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            out_console.print(f"{k}: {v}", highlight=False)
