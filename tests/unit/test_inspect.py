"""``relais inspect``: what Relais sees in one message (keyword, danger, private data, the
text as stored), one message or JSON Lines from stdin, and nothing stored anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli.app import app


@pytest.fixture
def db_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "relais.db"


def inspect(db_file: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["inspect", *args], input=stdin,
                                env={"RELAIS_DATABASE_URL": f"sqlite+aiosqlite:///{db_file}"})
    return result.exit_code, result.stdout


def test_a_keyword_is_named_in_english_and_nothing_is_stored(db_file: Path):
    code, out = inspect(db_file, "Stop.", "--json")
    assert code == 0
    seen = json.loads(out)
    assert (seen["keyword"], seen["danger"], seen["private_data"]) == ("STOP", None, [])
    assert not db_file.exists()


def test_danger_words_give_their_categories(db_file: Path):
    code, out = inspect(db_file, "il m a frapé hier soir, g peur de lui", "--json")
    assert code == 0
    seen = json.loads(out)
    assert seen["keyword"] is None
    assert "violence" in seen["danger"]


def test_private_data_is_named_and_masked(db_file: Path):
    code, out = inspect(db_file, "mon mdp c est Soleil2024! merci", "--lang", "fr", "--json")
    assert code == 0
    seen = json.loads(out)
    assert seen["private_data"] == ["password"]
    assert "Soleil2024" not in seen["masked"] and "[MOT DE PASSE]" in seen["masked"]
    assert seen["language"] == "fr"


def test_stdin_gives_one_json_object_per_line(db_file: Path):
    lines = ["MENU", "je dors dehors ce soir avec mon fils", "bonjour", ""]
    code, out = inspect(db_file, "-", stdin="\n".join(lines) + "\n")
    assert code == 0
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["text"] for o in objects] == lines
    assert objects[0]["keyword"] == "MENU"
    assert "street" in objects[1]["danger"]
    assert objects[2]["danger"] is None and objects[3]["danger"] is None


def test_human_readable_without_json(db_file: Path):
    code, out = inspect(db_file, "mon code reçu par sms est 482913")
    assert code == 0
    assert "private data: code" in out
    assert "482913" not in out
