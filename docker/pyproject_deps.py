"""Requirements of pyproject.toml for ``pip install -r``, and a check of the torch pins (used by docker/Dockerfile).

The image installs dependencies in a layer keyed on this list alone, so edits to the source, to dev extras or to
tool settings in pyproject.toml do not reinstall them. ``--check-installed torch torchvision`` fails the build
when the versions pinned there differ from those already installed by the Dockerfile's torch layer (whose
versions are build arguments), instead of letting pip replace a 5 GB layer silently.

Usage:
  python pyproject_deps.py PYPROJECT [--build-system]          print [project].dependencies (+ build requires)
  python pyproject_deps.py REQUIREMENTS --check-installed NAME...   exit 2 unless NAME==pin is installed
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pinned(requirement: str) -> str | None:
    match = re.search(r"==\s*([^\s,;]+)", requirement)
    return match.group(1) if match else None


def _read(path: Path, build_system: bool) -> list[str]:
    if path.suffix == ".toml":
        project = tomllib.loads(path.read_text())
        requirements = list(project["project"]["dependencies"])
        return requirements + (list(project["build-system"]["requires"]) if build_system else [])
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _check(path: Path, requirements: list[str], names: list[str]) -> int:
    by_name = {_name(r): r for r in requirements}
    for name in names:
        wanted = _pinned(by_name.get(name.lower(), ""))
        if wanted is None:
            print(f"pyproject_deps: {name} is not pinned with '==' in {path}", file=sys.stderr)
            return 2
        installed = metadata.version(name).split("+")[0]
        if installed != wanted:
            print(f"pyproject_deps: {path} pins {name}=={wanted} but the image's torch layer installed {installed}; "
                  "update TORCH_VERSION / TORCHVISION_VERSION in docker/Dockerfile", file=sys.stderr)
            return 2
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="pyproject.toml, or a requirements file this script wrote")
    parser.add_argument("--build-system", action="store_true", help="also print [build-system].requires")
    parser.add_argument("--check-installed", nargs="+", default=[], metavar="NAME",
                        help="check, print nothing: these packages are installed at the versions the file pins")
    args = parser.parse_args()
    requirements = _read(args.path, args.build_system)
    if args.check_installed:
        return _check(args.path, requirements, args.check_installed)
    print("\n".join(requirements))
    return 0


if __name__ == "__main__":
    sys.exit(main())
