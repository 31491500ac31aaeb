"""environment.yml and pyproject.toml name the same packages with the same version ranges.

environment.yml installs nbtoolkit from the clone with the extras named on its ``-e .[…]`` line; every
package of the core and of those extras must be in it (from conda-forge or pip), with the range
pyproject.toml gives, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
#: conda-forge names that differ from the PyPI ones.
CONDA_TO_PYPI = {"soxr-python": "soxr", "playwright-python": "playwright"}
#: What a conda environment needs to exist at all, not packages of nbtoolkit's.
CONDA_ONLY = {"python", "pip"}
EDITABLE = re.compile(r"^-e \.\[(?P<extras>[\w,-]+)\]$")


def environment() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))
    return loaded


def project() -> dict[str, Any]:
    loaded: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return loaded["project"]


def conda_spec(line: str) -> tuple[str, SpecifierSet]:
    """``name>=1,<2`` (conda's match-spec as this file writes it) → (PyPI name, specifier)."""
    found = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(.*?)\s*", line)
    assert found, f"environment.yml: cannot read {line!r}"
    name, spec = found.groups()
    return canonicalize_name(CONDA_TO_PYPI.get(name, name)), SpecifierSet(spec.replace(" ", ""))


def split_environment() -> tuple[dict[str, SpecifierSet], dict[str, SpecifierSet], list[str]]:
    """(conda packages, pip packages, extras of the editable nbtoolkit)."""
    conda: dict[str, SpecifierSet] = {}
    pip: dict[str, SpecifierSet] = {}
    extras: list[str] = []
    for entry in environment()["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                if editable := EDITABLE.match(line):
                    extras += editable["extras"].split(",")
                    continue
                req = Requirement(line)
                pip[canonicalize_name(req.name)] = req.specifier
            continue
        name, spec = conda_spec(entry)
        assert name not in conda, f"environment.yml lists {name} twice"
        conda[name] = spec
    return conda, pip, extras


def pyproject_packages(extras: list[str]) -> dict[str, SpecifierSet]:
    """The core dependencies plus those of ``extras``, following ``nbtoolkit[…]`` inside extras."""
    meta = project()
    optional = meta["optional-dependencies"]
    own = canonicalize_name(meta["name"])
    lines = list(meta["dependencies"])
    pending, done = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in done:
            continue
        assert extra in optional, (
            f"environment.yml installs the extra {extra!r}; pyproject has none"
        )
        done.add(extra)
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == own:
                pending += req.extras
            else:
                lines.append(line)
    return {canonicalize_name(r.name): r.specifier for r in map(Requirement, lines)}


def test_environment_installs_nbtoolkit_from_the_clone_with_an_extra() -> None:
    _, _, extras = split_environment()
    assert extras, "environment.yml must install nbtoolkit itself: '-e .[dev]' under pip"


def test_environment_and_pyproject_name_the_same_packages() -> None:
    conda, pip, extras = split_environment()
    assert not conda.keys() & pip.keys(), "a package comes from both conda-forge and pip"
    listed = {k for k in {*conda, *pip} if k not in CONDA_ONLY}
    wanted = set(pyproject_packages(extras))
    assert listed == wanted, (
        f"only in environment.yml: {sorted(listed - wanted)}; "
        f"only in pyproject.toml: {sorted(wanted - listed)}"
    )


def test_environment_and_pyproject_give_the_same_ranges() -> None:
    conda, pip, extras = split_environment()
    listed = {**conda, **pip}
    differ = {
        name: (str(listed[name]), str(spec))
        for name, spec in pyproject_packages(extras).items()
        if name in listed and listed[name] != spec
    }
    assert not differ, f"environment.yml vs pyproject.toml ranges: {differ}"
    assert conda["python"] == SpecifierSet(project()["requires-python"])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("soxr-python>=0.3", ("soxr", ">=0.3")),
        ("jupyterlab >=4, <5", ("jupyterlab", "<5,>=4")),
        ("dashscope>=1.24,<3", ("dashscope", "<3,>=1.24")),
        ("pip", ("pip", "")),
    ],
)
def test_conda_lines_are_read_as_pypi_name_and_range(line: str, expected: tuple[str, str]) -> None:
    name, spec = conda_spec(line)
    assert (name, spec) == (expected[0], SpecifierSet(expected[1]))
