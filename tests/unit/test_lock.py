"""Dependencies are pinned: pyproject.toml bounds every dependency below its next major
version, and requirements/app.txt and requirements/test.txt (scripts/lock.sh) pin every
package, direct or not, to one version with hashes, without a machine-local index URL.
The venv the tests run in was installed from that lock."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCKS = {"app": ROOT / "requirements" / "app.txt", "test": ROOT / "requirements" / "test.txt"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


def extra_test_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]]


def build_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [hashes])} from a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            assert current not in pins, f"{path.name}: {current} pinned twice"
            pins[current] = (match.group(2), [])
        elif line.startswith("--hash=") and current:
            pins[current][1].append(line.split("=", 1)[1].rstrip(" \\"))
        else:
            pytest.fail(f"{path.name}: unexpected line {raw!r}")
    return pins


@pytest.mark.parametrize("req", runtime_requirements() + extra_test_requirements(), ids=str)
def test_every_dependency_has_an_upper_bound(req: Requirement) -> None:
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in req.specifier), (
        f"{req} in pyproject.toml has no upper bound: its next major version could break us"
    )


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_lock_pins_every_package_with_hashes_and_no_local_index(kind: str) -> None:
    text = LOCKS[kind].read_text(encoding="utf-8")
    for option in ("--index-url", "--extra-index-url", "--find-links", "--trusted-host",
                   "file://", "/opt/"):
        assert option not in text, f"{LOCKS[kind].name} names a local index ({option})"
    pins = read_lock(LOCKS[kind])
    assert pins
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no hash in {LOCKS[kind].name}"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_lock_satisfies_pyproject(kind: str) -> None:
    pins = read_lock(LOCKS[kind])
    wanted = runtime_requirements() + build_requirements()
    if kind == "test":
        wanted += extra_test_requirements()
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in {LOCKS[kind].name}: run scripts/lock.sh"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{LOCKS[kind].name} pins {name}=={pins[name][0]}, pyproject.toml wants {req}:"
            " run scripts/lock.sh"
        )


def test_app_lock_is_the_test_lock_minus_test_tools() -> None:
    app, test = read_lock(LOCKS["app"]), read_lock(LOCKS["test"])
    assert set(app) <= set(test)
    assert {n: v for n, (v, _) in app.items()} == {n: test[n][0] for n in app}


def test_the_running_venv_was_installed_from_the_lock() -> None:
    wrong = {}
    for name, (version, _) in read_lock(LOCKS["test"]).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs locked: {wrong}; rm .venv/.relais-installed and rerun"
