"""Services of the installed ``robopoint_hf`` package that the model code uses when they are there.

The files of ``model/`` are copied next to the weights and run without the package (``trust_remote_code``). With the
package installed, three jobs are done better by package code that the model code must not import (that would tie
the Hub copies to the package and close an import cycle through ``original/`` and the save path): reading
checkpoints in the ORIGINAL LLaVA format, the one save path (code files, complete ``auto_map``, atomic folders), and
failing in one line on a Hub id that cannot be reached. `robopoint_hf.registration` fills these slots when it
registers the classes; in a Hub copy they stay empty and the model code does what transformers does.
"""

from __future__ import annotations

from typing import Any

SERVICES: dict[str, Any] = {}
"""Filled by the package: ``"original_checkpoint"`` (`robopoint_hf.original.checkpoint`: ``is_original_checkpoint``,
``load_original``), ``"load_original_processor"`` (`robopoint_hf.original.convert.load_original_processor`) and
``"save_path"`` (`robopoint_hf.hub_checkpoint`: ``write_remote_code``, ``staged_folder``, ``resolve_pretrained``).
A dict, not module attributes: siblings import it by name (``from .package_services import SERVICES``, the form
transformers follows when it copies a module's relative imports) and must see what is filled in later."""

__all__ = ["SERVICES"]
