"""Print pip requirements that pin every dependency to its declared minimum.

Reads pyproject.toml, so the pins cannot drift from the declared ranges:

    python3 .ci/min_requirements.py [EXTRA ...] > min.txt

Each ``name>=X`` of ``[project] dependencies`` and of the named extras becomes
``name==X`` (an extra that names ``skrobust[...]`` brings those extras in too).
torch is pinned to ``TORCH`` instead: the CPU build on disk, as everywhere in CI.
A requirement without a ``>=`` floor is an error, so every dependency keeps one.
"""

import re
import sys
import tomllib
from pathlib import Path

TORCH = "torch==2.13.0"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# name, optional [extras], then the specifiers up to an environment marker.
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)(;.*)?$")


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _collect(project, extras):
    """The requirement strings of the core dependencies and of ``extras``, recursively."""
    own = _normalize(project["name"])
    optional = project.get("optional-dependencies", {})
    pending, seen, found = list(extras), set(), list(project.get("dependencies", []))
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}; it has {sorted(optional)}.")
        seen.add(extra)
        for requirement in optional[extra]:
            match = REQUIREMENT.match(requirement)
            if match and _normalize(match[1]) == own:
                pending.extend(e.strip() for e in (match[2] or "[]")[1:-1].split(",") if e.strip())
            else:
                found.append(requirement)
    return found


def min_requirements(extras=()):
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    pins = {}
    for requirement in _collect(project, extras):
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"Cannot read the requirement {requirement!r}.")
        name, specifiers, marker = _normalize(match[1]), match[3], match[4] or ""
        if name == "torch":
            pins[name] = TORCH
            continue
        floors = re.findall(r">=\s*([^,\s]+)", specifiers)
        if len(floors) != 1:
            raise SystemExit(f"{requirement!r} needs exactly one '>=' floor to be tested.")
        pin = f"{name}=={floors[0]}{' ' + marker if marker else ''}"
        if pins.get(name, pin) != pin:
            raise SystemExit(f"Two different floors for {name}: {pins[name]!r} and {pin!r}.")
        pins[name] = pin
    return sorted(pins.values())


if __name__ == "__main__":
    print("\n".join(min_requirements(sys.argv[1:])))
