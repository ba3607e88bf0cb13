"""`ChunkedDynamicCache`: appends in place, reads like transformers' `DynamicCache`, and decodes the same tokens."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model, tiny_processor
from PIL import Image
from transformers import DynamicCache

from robopoint_hf.model.kv_cache import ChunkedDynamicCache, ChunkedDynamicLayer


def states(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Laid out as attention makes them ([batch, length, heads, dim] transposed): not contiguous.
    keys = torch.randn(batch, length, 2, 3, generator=generator).transpose(1, 2)
    return keys, keys * 10


def test_updates_write_into_one_buffer_and_read_like_concatenation(monkeypatch):
    monkeypatch.setattr(ChunkedDynamicLayer, "chunk", 4)
    layer, reference = ChunkedDynamicLayer(), []
    pointers = []
    for step, length in enumerate([3, 1, 1, 2]):
        keys, values = states(2, length, step)
        reference.append((keys, values))
        got_keys, got_values = layer.update(keys, values)
        pointers.append(got_keys.data_ptr())
        assert torch.equal(got_keys, torch.cat([k for k, _ in reference], dim=-2))
        assert torch.equal(got_values, torch.cat([v for _, v in reference], dim=-2))
    # 3 and 4 positions fit the first chunk of 4; 5 and 7 positions needed a second one.
    assert pointers[0] == pointers[1] and pointers[2] == pointers[3] and pointers[1] != pointers[2]
    assert layer.get_seq_length() == 7 and layer._key_buffer.shape[2] == 8


def test_crop_keeps_the_buffer_and_the_next_update_overwrites(monkeypatch):
    monkeypatch.setattr(ChunkedDynamicLayer, "chunk", 8)
    layer = ChunkedDynamicLayer()
    first, second, third = states(1, 4, 0), states(1, 2, 1), states(1, 1, 2)
    layer.update(*first)
    buffer = layer.update(*second)[0].data_ptr()
    layer.crop(-2)
    assert layer.get_seq_length() == 4
    keys, values = layer.update(*third)
    assert keys.data_ptr() == buffer
    assert torch.equal(keys, torch.cat([first[0], third[0]], dim=-2))
    assert torch.equal(values, torch.cat([first[1], third[1]], dim=-2))


def test_replaced_tensors_are_copied_into_a_new_buffer():
    layer = ChunkedDynamicLayer()
    prompt, step = states(1, 5, 0), states(3, 1, 1)
    layer.update(*prompt)
    layer.batch_repeat_interleave(3)  # what a shared prefix does: new tensors, not views of the buffer
    keys, values = layer.update(*step)
    assert torch.equal(keys, torch.cat([prompt[0].expand(3, -1, -1, -1), step[0]], dim=-2))
    assert torch.equal(values, torch.cat([prompt[1].expand(3, -1, -1, -1), step[1]], dim=-2))
    layer.reset()
    assert layer.get_seq_length() == 0 and layer._key_buffer is None


@pytest.fixture(scope="module")
def model_and_batch():
    model, processor = tiny_model(), tiny_processor()
    image = Image.new("RGB", (40, 30), (90, 140, 200))
    batch = processor(
        images=[image, image], text=["Point to the cup.", "Find free space on the table."], return_tensors="pt"
    )
    return model, batch


@pytest.mark.parametrize("num_beams", [1, 2])
def test_generate_decodes_on_the_chunked_cache_as_on_the_dynamic_cache(model_and_batch, num_beams):
    model, batch = model_and_batch
    settings = dict(max_new_tokens=300, do_sample=False, num_beams=num_beams, return_dict_in_generate=True)
    settings["output_scores"] = True
    ours = model.generate(**batch, **settings)
    theirs = model.generate(**batch, **settings, cache=DynamicCache())
    assert isinstance(ours.cache, ChunkedDynamicCache) and type(theirs.cache) is DynamicCache
    assert ours.sequences.shape[1] > batch["input_ids"].shape[1] + ChunkedDynamicLayer.chunk  # grew past a chunk
    assert torch.equal(ours.sequences, theirs.sequences)
    assert all(torch.equal(a, b) for a, b in zip(ours.scores, theirs.scores, strict=True))


def test_an_explicit_cache_choice_is_kept(model_and_batch):
    model, batch = model_and_batch
    settings = dict(max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    assert type(model.generate(**batch, **settings, cache_implementation="dynamic").cache) is DynamicCache
    assert model.generate(**batch, **settings, use_cache=False).cache is None
    mine = DynamicCache()
    with pytest.warns(FutureWarning, match="past_key_values"):
        assert model.generate(**batch, **settings, past_key_values=mine).cache is mine
