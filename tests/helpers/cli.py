"""The ``relais`` command through typer's runner, as one call a test can read."""

from __future__ import annotations

from typing import NamedTuple

from typer.testing import CliRunner

from bot.cli.app import app


class Ran(NamedTuple):
    """What a command left: ``code, out, err = relais(...)`` or ``.exit_code``…"""

    exit_code: int
    stdout: str
    stderr: str


def relais(db_url: str, *args: str, env: dict[str, str] | None = None,
           input: str | None = None) -> Ran:
    """Run ``relais ARGS`` on ``db_url`` (``RELAIS_DATABASE_URL``), with ``env`` added and
    ``input`` as stdin; stdout and stderr apart."""
    result = CliRunner().invoke(app, list(args), input=input,
                                env={"RELAIS_DATABASE_URL": db_url, **(env or {})})
    return Ran(result.exit_code, result.stdout, result.stderr)
