"""Generate the files that must exist twice: the Where2Place metric Space's copies of the scoring code, and the
shipped default model's copies of the model code.

Why copies: the Space (``metrics/where2place/``) must load with ``evaluate.load`` having only evaluate, numpy and
pillow installed -- no ``robopoint_hf``. ``evaluate`` 0.4.6 copies the files a metric script imports RELATIVELY
(``from .points import ...``) from the script's folder (``evaluate/loading.py``: ``get_imports`` +
``_download_additional_modules``), but only direct imports of the script, and it refuses a relative import named like
the script itself (``where2place``). So the folder holds copies of the canonical modules (`METRIC_COPIES`: ``points.py``,
``answer_formats.py``, ``protocols.py``, and ``where2place.py`` saved as ``scoring.py``), identical but for the
package import of ``points``, which becomes the sibling import ``from .points import``; the metric script imports
each of them directly. Symlinks were rejected
(lost on Windows checkouts and in some Hub uploads). ``tests/test_where2place_metric.py`` fails when a copy is stale.

The shipped default model (``default_model/``) is a Hub-native checkpoint like every folder the package writes: its
code files, ``auto_map`` and ``custom_pipelines`` come from `robopoint_hf.hub_checkpoint.write_remote_code`, so a
copy of the folder loads with ``trust_remote_code=True`` where the package is not installed.
``tests/test_hub_contract.py`` fails when they are stale.

Regenerate after editing `robopoint_hf.model.points`, `robopoint_hf.evaluation.where2place` or a module of the
model code::

    python -m robopoint_hf.hub_files          # write the copies
    python -m robopoint_hf.hub_files --check  # exit 1 if a copy is stale
"""

from __future__ import annotations

import argparse
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
METRIC_DIR = PACKAGE_DIR / "evaluation" / "metrics" / "where2place"
"""Folder of the Where2Place `evaluate` metric; ``evaluate.load(str(METRIC_DIR))`` loads it offline."""

METRIC_COPIES: dict[str, str] = {
    "model/points.py": "points.py",
    "evaluation/where2place.py": "scoring.py",
    "evaluation/answer_formats.py": "answer_formats.py",
    "evaluation/protocols.py": "protocols.py",
}
"""Canonical module (in the package) -> copy name in `METRIC_DIR`."""


def space_copy(source: str) -> bytes:
    """The Space's copy of the canonical module `source`: its package imports made sibling imports."""
    text = (PACKAGE_DIR / source).read_text(encoding="utf-8")
    return text.replace("from robopoint_hf.model.points import", "from .points import").encode("utf-8")


def stale_metric_files() -> list[Path]:
    """Copies in `METRIC_DIR` that are missing or differ from what their canonical module generates."""
    stale = []
    for source, copy in METRIC_COPIES.items():
        target = METRIC_DIR / copy
        if not target.is_file() or target.read_bytes() != space_copy(source):
            stale.append(target)
    return stale


def sync_metric_folder() -> list[Path]:
    """Write the copies into `METRIC_DIR`; returns the files that changed."""
    changed = stale_metric_files()
    for target in changed:
        source = next(s for s, c in METRIC_COPIES.items() if c == target.name)
        target.write_bytes(space_copy(source))
    return changed


def stale_default_model_files() -> list[Path]:
    """Code files and configs of the shipped default model that `write_remote_code` would change."""
    from .checkpoints import DEFAULT_MODEL_DIR
    from .hub_checkpoint import stale_remote_code

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        return []
    return [DEFAULT_MODEL_DIR / name for name in stale_remote_code(DEFAULT_MODEL_DIR)]


def sync_default_model() -> list[Path]:
    """Rewrites the shipped default model's code files and configs (never its weights)."""
    from .checkpoints import DEFAULT_MODEL_DIR
    from .hub_checkpoint import write_remote_code

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        return []
    return write_remote_code(DEFAULT_MODEL_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale copies (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_metric_files() + stale_default_model_files()
        for path in stale:
            print(f"stale: {path}")
        return 1 if stale else 0
    for path in sync_metric_folder() + sync_default_model():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
