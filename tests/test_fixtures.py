"""The parity fixtures are what the original code produced: every file in the manifest, byte for byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = FIXTURES / "original" / "MANIFEST.json"


def _copy_of(relative: str) -> Path | None:
    """Manifest paths are relative to the original fixture folder; the Where2Place sets sit one level up here."""
    for base in (FIXTURES / "original", FIXTURES):
        if (base / relative).is_file():
            return base / relative
    return None


def test_every_manifest_file_is_present_with_its_recorded_sha256():
    entries = json.loads(MANIFEST.read_text())
    assert len(entries) >= 100
    mismatched = []
    for entry in entries:
        path = _copy_of(entry["path"])
        if path is None or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            mismatched.append(entry["path"])
    assert mismatched == []
