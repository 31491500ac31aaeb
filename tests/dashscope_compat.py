"""Run the SDK-facing tests against the oldest and the newest ``dashscope`` that pyproject.toml
allows (``make compat``).

Each version is installed with ``pip install --target`` into a throwaway directory that goes first on
``PYTHONPATH``, so the venv is never touched. Only what the venv cannot satisfy of that version's
own requirements is installed beside it. The SDK-facing tests are the test files that import
``dashscope`` plus those of our clients built on it (:data:`VIA_OUR_CLIENTS`). Prints one line per
version and exits non-zero when any run fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
#: Tests of our clients that call the SDK without importing it themselves.
VIA_OUR_CLIENTS = ["tests/test_qwen_audio_client.py", "tests/test_dialog_client.py"]
#: One version's install and test run; a hung pip or test run must not hang `make compat`.
BOUND_S = 900


def dashscope_requirement() -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = [Requirement(r) for r in project["dependencies"] if r.startswith("dashscope")]
    if len(found) != 1:
        sys.exit(f"pyproject.toml lists dashscope {len(found)} times — list it once")
    return found[0]


def published_versions() -> list[Version]:
    """Every dashscope version the package index offers (``pip index versions``)."""
    done = subprocess.run(
        # not quiet: -q also silences the list itself
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "index",
            "versions",
            "dashscope",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listed = re.search(r"Available versions: (.*)", done.stdout)
    if listed is None:
        sys.exit(f"pip index versions dashscope printed no versions:\n{done.stdout}{done.stderr}")
    return [Version(v) for v in listed.group(1).split(", ")]


def sdk_tests() -> list[str]:
    direct = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "tests").glob("test_*.py"))
        if re.search(r"^\s*(import|from) dashscope\b", p.read_text(encoding="utf-8"), re.M)
    ]
    return sorted({*direct, *VIA_OUR_CLIENTS})


def unmet(target: Path) -> list[str]:
    """The installed dashscope's own requirements that the venv does not satisfy."""
    [dist] = metadata.distributions(path=[str(target)], name="dashscope")
    missing = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if not req.specifier.contains(have, prereleases=True):
            missing.append(line)
    return missing


def run(version: Version, tests: list[str]) -> tuple[bool, str]:
    """Install ``version`` into a throwaway directory and run ``tests`` with it first on the path."""
    with tempfile.TemporaryDirectory(prefix=f"dashscope-{version}-") as tmp:
        target = Path(tmp)
        install = [*PIP, "install", "--target", str(target)]
        subprocess.run([*install, "--no-deps", f"dashscope=={version}"], check=True, timeout=300)
        if extra := unmet(target):
            subprocess.run([*install, *extra], check=True, timeout=BOUND_S)
        path = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
        env = {"PYTHONPATH": path, "NBTOOLKIT_HEADLESS": "1"}
        probe = "import dashscope.version as v; print(v.__version__)"
        seen = subprocess.run(
            [sys.executable, "-c", probe],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        if Version(seen) != version:
            return False, f"imported dashscope {seen}, not {version}"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-m",
                "not browser",
                *tests,
            ],
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=BOUND_S,
        )
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
        if done.returncode:  # why, in short: the distinct error lines, then the failed tests
            lines = done.stdout.splitlines()
            errors = list(dict.fromkeys(line for line in lines if line.startswith("E ")))
            failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
            print(*errors[:20], *failed[:30], done.stderr[-2000:], sep="\n")
        extra_note = f"; also installed: {', '.join(extra)}" if extra else ""
        return done.returncode == 0, summary + extra_note


def main() -> int:
    requirement = dashscope_requirement()
    allowed = sorted(v for v in published_versions() if requirement.specifier.contains(v))
    if not allowed:
        sys.exit(f"no published dashscope satisfies {requirement}")
    tests = sdk_tests()
    print(f"== compat: {requirement} allows {len(allowed)} published versions; SDK-facing tests:")
    print("   " + " ".join(tests))
    ok = True
    for version in sorted({allowed[0], allowed[-1]}):
        start = time.monotonic()
        passed, summary = run(version, tests)
        ok &= passed
        verdict = "PASS" if passed else "FAIL"
        print(f"   dashscope {version}: {verdict} in {time.monotonic() - start:.0f} s — {summary}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
