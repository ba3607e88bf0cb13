"""Weight dtypes by name: the choices every verb offers, the default per device, and safetensors' names for them.

Names are transformers' ``dtype`` spellings (``"bfloat16"``, not ``torch.bfloat16``), so this module is pure Python
and ``--help`` stays free of torch; :func:`torch_dtype` imports torch only when a name becomes a ``torch.dtype``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DTYPE_CHOICES = ("float32", "bfloat16", "float16")
"""The weight dtypes every verb, recipe and Python entry point accepts."""

DEFAULT_DTYPES = {"cpu": "float32", "cuda": "bfloat16", "mps": "float16"}
"""Weight dtype per device when none is given: exact float32 on CPU, the usual half types elsewhere."""

SAFETENSORS_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
"""torch dtype name -> the dtype name in a safetensors header (both directions are read from this table)."""


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16`` or ``"torch.bfloat16"`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def torch_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """The floating-point ``torch.dtype`` called ``dtype``.

    Raises:
        `ValueError`: naming the dtype and the choices when it is not a floating-point torch dtype.
    """
    import torch

    value = getattr(torch, dtype_name(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"Unknown dtype {dtype!r}; expected one of {', '.join(DTYPE_CHOICES)}.")
    return value


def safetensors_dtype(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"F16"``, the name a safetensors header stores."""
    return SAFETENSORS_DTYPES[dtype_name(dtype)]


def dtype_from_safetensors(name: str) -> torch.dtype:
    """``"F16"`` (a safetensors header's dtype) -> ``torch.float16``."""
    import torch

    for torch_name, stored in SAFETENSORS_DTYPES.items():
        if stored == name:
            return getattr(torch, torch_name)
    raise ValueError(
        f"Unsupported safetensors dtype {name!r}; expected one of {', '.join(SAFETENSORS_DTYPES.values())}."
    )


__all__ = [
    "DEFAULT_DTYPES",
    "DTYPE_CHOICES",
    "SAFETENSORS_DTYPES",
    "dtype_from_safetensors",
    "dtype_name",
    "safetensors_dtype",
    "torch_dtype",
]
