"""pyproject.toml: the runtime dependencies are requirements.txt's, and the wheel holds every
module of wow_jax and configs/."""

import tomllib
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_dependencies_are_requirements_txt():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert _pyproject()["project"]["dependencies"] == requirements


def test_packages_cover_every_module_of_wow_jax_and_configs():
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = set(setuptools.find_packages(str(ROOT), include=include))
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("wow_jax", "configs")
        for path in (ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert folders == packages  # A folder without __init__.py would be left out of the wheel.
