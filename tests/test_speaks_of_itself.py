"""The project speaks of itself only: no path outside the repository and no citation of documents
that are not in it, in the package, its docs, its notebooks or its top-level files. Facts from outside
live in docs/ with their public web address (docs/protocols.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ["nbtoolkit", "docs", "notebooks", "README.md", "environment.yml", "pyproject.toml"]
TEXT_SUFFIXES = {".py", ".md", ".json", ".ipynb", ".js", ".css", ".txt", ".toml", ".yml", ".yaml"}
# the machines' shared folder and paths into it, and the names the team's own notes gave to
# documents (seeds S000-S003, "reference §n", reference/<note>.md)
OUTSIDE = re.compile(
    r"/wor"
    r"k/|\.\./shared\b|\bshared/(reference|seeds|design)|\breference/[\w-]+\.md"
    r"|\bS00[0-3]\b|reference §"
)


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = REPO / name
        if path.is_file():
            files.append(path)
        for found in sorted(path.rglob("*")) if path.is_dir() else []:
            if found.suffix in TEXT_SUFFIXES and "__pycache__" not in found.parts:
                files.append(found)
    return files


def outside_references(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if OUTSIDE.search(line)]


def test_nothing_shipped_names_a_place_outside_the_repository() -> None:
    files = scanned_files()
    assert len(files) > 50, "the scan found almost nothing: are the folders where it looks?"
    found = {
        str(path.relative_to(REPO)): hits
        for path in files
        if (hits := outside_references(path.read_text(encoding="utf-8", errors="replace")))
    }
    assert not found, "cite docs/protocols.md#… (with the public address) instead:\n" + "\n".join(
        f"{name}: {hit}" for name, hits in found.items() for hit in hits
    )


@pytest.mark.parametrize(
    "line",
    [
        "see /work/shared/seeds/qwen-audio-api.md",
        "Read `../shared/design.md` first",
        "#: S001: audio files up to 10 MB",
        "(reference §2.7, §7.5)",
        "see shared/reference/offline-speech-engine.md §3",
        "Two shapes arrive (reference/dashscope-protocols.md §2.6 and §4.3):",
    ],
)
def test_each_kind_of_outside_reference_is_caught(line: str) -> None:
    assert outside_references(line) == [line]


@pytest.mark.parametrize(
    "line",
    [
        "(docs/protocols.md#sse-framing)",
        "https://help.aliyun.com/document_detail/2975502.html",
        "S0012 is not a seed; neither is XS001",
    ],
)
def test_citations_of_our_own_docs_and_public_pages_pass(line: str) -> None:
    assert outside_references(line) == []


def anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_cited_section_of_docs_protocols_exists() -> None:
    page = (REPO / "docs" / "protocols.md").read_text(encoding="utf-8")
    sections = {anchor(line.lstrip("#")) for line in page.splitlines() if line.startswith("## ")}
    cited = {
        (str(path.relative_to(REPO)), found)
        for path in [*scanned_files(), *sorted((REPO / "tests").rglob("*.py"))]
        for found in re.findall(
            r"docs/protocols\.md#([\w-]+)", path.read_text(encoding="utf-8", errors="replace")
        )
    }
    assert cited, "nothing cites docs/protocols.md: is the pattern right?"
    missing = sorted((name, section) for name, section in cited if section not in sections)
    assert not missing, f"docs/protocols.md has no such section: {missing}"
