"""The real `relais` command as a subprocess: chat in a terminal, configuration errors,
and `relais serve` answering /healthz then stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pexpect
import pytest

RELAIS = str(Path(sys.executable).parent / "relais")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env["RELAIS_OPENING_HOURS"] = "24/7"  # the answer must not depend on when tests run
    env.update(extra)
    return env


def test_chat_in_a_real_terminal_through_onboarding_and_aide(tmp_path):
    env = clean_env(RELAIS_DATABASE_URL=f"sqlite:///{tmp_path}/chat.db", TERM="dumb")
    child = pexpect.spawn(RELAIS, ["chat", "--as", "alice"], env=env, cwd=str(tmp_path),
                          encoding="utf-8", timeout=30)
    try:
        child.expect("vous> ")
        child.sendline("bonjour")
        child.expect("Choisissez votre langue")
        child.expect("1. Français")
        child.expect("vous> ")
        child.sendline("1")
        child.expect("l'aise avec internet")
        child.expect("vous> ")
        child.sendline("AIDE")
        child.expect("Une personne de Relais va vous répondre ici")
        child.expect("vous> ")
        child.sendeof()
        child.expect("Au revoir")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert (tmp_path / "chat.db").exists()


def test_chat_remembers_the_person_between_runs(tmp_path):
    env = clean_env(RELAIS_DATABASE_URL=f"sqlite:///{tmp_path}/chat.db")
    first = subprocess.run([RELAIS, "chat", "--as", "bob", "--lang", "en"], input="hi\n",
                           env=env, capture_output=True, text=True, timeout=60)
    assert "Hello! This is Relais." in first.stdout
    second = subprocess.run([RELAIS, "chat", "--as", "bob"], input="menu\n", env=env,
                            capture_output=True, text=True, timeout=60)
    assert "What do you need?" in second.stdout
    assert "Hello! This is Relais." not in second.stdout


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("RELAIS_DATABASE_URL", "mysql://root@localhost/x", "RELAIS_DATABASE_URL"),
        ("RELAIS_DATABASE_URL", "not a url at all", "RELAIS_DATABASE_URL"),
        ("RELAIS_DATABASE_URL", "sqlite:////etc/hostname/sub/relais.db", "does not exist"),
        ("RELAIS_QUIET_HOURS", "20h-9h", "RELAIS_QUIET_HOURS"),
        ("RELAIS_PUBLIC_URL", "ftp://example.org", "RELAIS_PUBLIC_URL"),
        ("RELAIS_OPENING_HOURS", "lundi matin", "RELAIS_OPENING_HOURS"),
        ("RELAIS_PORT", "eighty", "RELAIS_PORT"),
    ],
)
def test_bad_configuration_gives_one_line_and_exit_2(tmp_path, variable, value, expected):
    env = clean_env(**{variable: value})
    env.setdefault("RELAIS_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    if variable == "RELAIS_DATABASE_URL":
        env[variable] = value
    result = subprocess.run([RELAIS, "db", "upgrade"], env=env, cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_postgres_is_one_line_not_a_traceback(tmp_path):
    env = clean_env(RELAIS_DATABASE_URL="postgresql://postgres@127.0.0.1:9/relais")
    result = subprocess.run([RELAIS, "db", "upgrade"], env=env, cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("relais: database unavailable")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_healthz_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    env = clean_env(RELAIS_DATABASE_URL=f"sqlite:///{tmp_path}/serve.db",
                    RELAIS_PORT=str(port))
    process = subprocess.Popen([RELAIS, "serve"], env=env, cwd=str(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as response:
                    body = response.read().decode()
            except OSError:
                time.sleep(0.2)
        assert body is not None and '"ok"' in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            metrics = response.read().decode()
        assert "relais_outbox_depth" in metrics
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "database: sqlite " + str(tmp_path / "serve.db") in err
    assert "Traceback" not in err
    assert err.rstrip().endswith("stopped")  # its stop is logged, last
