"""A dynamic KV cache that appends in place.

transformers' `DynamicLayer` appends a step's keys and values with ``torch.cat``, so every decoding step allocates
and copies the whole cache of every layer. A RoboPoint prompt is long (576 image positions plus the text) and an
answer short, so that copy is a large share of a CPU decoding step, and it grows with every row of a batch (the
measurements are in ``docs/design/decoding.md``). `ChunkedDynamicLayer` keeps its keys and values in buffers with
spare positions, reserved ``chunk`` positions at a time, and writes each step into them; what it hands out are
views of the filled part, so everything that reads a `DynamicLayer` (masks, ``crop``, ``get_seq_length``, beam
reordering) reads it unchanged.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer


class ChunkedDynamicLayer(DynamicLayer):
    """`DynamicLayer` whose ``keys``/``values`` are views of buffers grown ``chunk`` positions at a time.

    Anything that replaces ``keys``/``values`` with other tensors (``batch_repeat_interleave``, beam reordering,
    offloading) is honoured: the next ``update`` copies them into fresh buffers. A ``crop`` keeps the buffers and
    the next ``update`` writes over the cropped positions, so a view taken before a crop sees them change.
    """

    chunk = 64

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        needed = length + key_states.shape[-2]
        if not (
            self._holds(self.keys, self._key_buffer, needed) and self._holds(self.values, self._value_buffer, needed)
        ):
            self._key_buffer = self._reserve(self.keys, key_states, length, needed)
            self._value_buffer = self._reserve(self.values, value_states, length, needed)
        self._key_buffer[:, :, length:needed].copy_(key_states)
        self._value_buffer[:, :, length:needed].copy_(value_states)
        self.keys = self._key_buffer[:, :, :needed]
        self.values = self._value_buffer[:, :, :needed]
        return self.keys, self.values

    @staticmethod
    def _holds(view: torch.Tensor, buffer: torch.Tensor | None, needed: int) -> bool:
        """Whether ``view`` is the filled start of ``buffer`` and the buffer has room for ``needed`` positions."""
        return (
            buffer is not None
            and view.dim() == 4
            and view.data_ptr() == buffer.data_ptr()
            and view.stride() == buffer.stride()
            and view.shape[:2] == buffer.shape[:2]
            and buffer.shape[2] >= needed
        )

    def _reserve(self, cached: torch.Tensor, states: torch.Tensor, length: int, needed: int) -> torch.Tensor:
        """A new buffer of ``needed`` positions rounded up to the chunk, holding the ``length`` cached ones."""
        batch, heads, _, head_dim = states.shape
        capacity = -(-needed // self.chunk) * self.chunk
        buffer = states.new_empty((batch, heads, capacity, head_dim))
        if length:
            buffer[:, :, :length].copy_(cached)
        return buffer

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


class ChunkedDynamicCache(DynamicCache):
    """`DynamicCache` made of `ChunkedDynamicLayer`: the cache `RoboPointForConditionalGeneration.generate` decodes
    with when the call names no cache (pass ``cache=DynamicCache()`` for transformers' own)."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=ChunkedDynamicLayer)


__all__ = ["ChunkedDynamicCache", "ChunkedDynamicLayer"]
