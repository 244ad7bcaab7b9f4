"""`deploy/songnet.env.example` documents every setting with its real default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.env_example import documented_fields, render_env_example
from service.settings import Settings
from tests.conftest import REPO

EXAMPLE = REPO / "deploy" / "songnet.env.example"
_LINE = re.compile(r"^# (SONGNET_[A-Z0-9_]+)=(.*)$")


def test_every_setting_is_documented_once() -> None:
    documented = documented_fields()
    assert len(documented) == len(set(documented)), "a field is documented twice"
    assert set(documented) == set(Settings.model_fields), (
        "add the new setting to DOCS in service/env_example.py, then "
        "`.venv/bin/python -m service.env_example > deploy/songnet.env.example`"
    )


def test_the_example_file_is_up_to_date() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == render_env_example(), (
        "regenerate: .venv/bin/python -m service.env_example > deploy/songnet.env.example"
    )


def test_uncommenting_every_line_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values: dict[str, str] = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _LINE.match(line)
        if match:
            values[match[1]] = match[2]  # the last line for a name is its default
    assert set(values) == {f"SONGNET_{name.upper()}" for name in Settings.model_fields}
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    for name in values:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    from_file = Settings(_env_file=env_file)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in Settings.model_fields:
        got, want = getattr(from_file, name), getattr(defaults, name)
        if isinstance(want, Path):
            got, want = got.resolve(), want.resolve()
        assert got == want, name
