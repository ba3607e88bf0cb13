"""Generate the files that must exist twice: the Where2Place metric Space's copies of the scoring code.

Why copies: the Space (``metrics/where2place/``) must load with ``evaluate.load`` having only evaluate, numpy and
pillow installed -- no ``robopoint_hf``. ``evaluate`` 0.4.6 copies the files a metric script imports RELATIVELY
(``from .points import ...``) from the script's folder (``evaluate/loading.py``: ``get_imports`` +
``_download_additional_modules``), but only direct imports of the script, and it refuses a relative import named like
the script itself (``where2place``). So the folder holds byte-identical copies of the canonical modules:
``points.py``, ``answer_formats.py``, ``protocols.py`` and ``where2place.py`` saved as ``scoring.py``; the metric script
imports each of them directly. Symlinks were rejected
(lost on Windows checkouts and in some Hub uploads). ``tests/test_where2place_metric.py`` fails when a copy is stale.

Regenerate after editing any module of `METRIC_COPIES`::

    python -m robopoint_hf.hub_files          # write the copies
    python -m robopoint_hf.hub_files --check  # exit 1 if a copy is stale
"""

from __future__ import annotations

import argparse
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
METRIC_DIR = PACKAGE_DIR / "metrics" / "where2place"
"""Folder of the Where2Place `evaluate` metric; ``evaluate.load(str(METRIC_DIR))`` loads it offline."""

METRIC_COPIES: dict[str, str] = {
    "points.py": "points.py",
    "where2place.py": "scoring.py",
    "answer_formats.py": "answer_formats.py",
    "protocols.py": "protocols.py",
}
"""Canonical module (in the package) -> copy name in `METRIC_DIR`."""


def stale_metric_files() -> list[Path]:
    """Copies in `METRIC_DIR` that are missing or differ from their canonical module."""
    stale = []
    for source, copy in METRIC_COPIES.items():
        target = METRIC_DIR / copy
        if not target.is_file() or target.read_bytes() != (PACKAGE_DIR / source).read_bytes():
            stale.append(target)
    return stale


def sync_metric_folder() -> list[Path]:
    """Write the byte-identical copies into `METRIC_DIR`; returns the files that changed."""
    changed = stale_metric_files()
    for target in changed:
        source = next(s for s, c in METRIC_COPIES.items() if c == target.name)
        target.write_bytes((PACKAGE_DIR / source).read_bytes())
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale copies (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_metric_files()
        for path in stale:
            print(f"stale: {path}")
        return 1 if stale else 0
    for path in sync_metric_folder():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
