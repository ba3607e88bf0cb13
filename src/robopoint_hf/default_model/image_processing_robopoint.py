"""Image preprocessing of RoboPoint, exact to the original and faster than it.

The original (``mm_utils.process_images`` with ``image_aspect_ratio="pad"``) pastes the image on a square canvas
filled with the CLIP mean colour ``(122, 116, 104)`` (centred on the short axis), then runs transformers'
``CLIPImageProcessor``: resize the shortest edge to 336 with PIL bicubic on uint8, centre-crop 336 (a no-op after
padding), rescale by 1/255 and normalise with the CLIP mean/std. ``image_aspect_ratio="square"`` skips the padding
(plain CLIP: shortest-edge resize, then a centre crop that cuts off the sides).

We do the same operations, but stay in PIL until the single resize and then normalise with one fused numpy
expression, instead of round-tripping every image through numpy/PIL conversions as the generic processor does.
Point labels are relative to the ORIGINAL, unpadded image; padding is invisible to them.

This module imports no torch at module level: it is copied next to the model code on the Hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_image(image) -> Image.Image:
    """Opens a path (or returns a PIL image / numpy array as PIL), fully decoded, naming the file on failure."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = np.moveaxis(image, 0, -1)  # channels-first input
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4))) or 0 in image.shape:
            raise ValueError(
                f"Cannot read an image from an array of shape {tuple(image.shape)}: expected H x W (grey), "
                "H x W x 3 (RGB) or H x W x 4 (RGBA), channels last or first."
            )
        if image.dtype != np.uint8:
            scale = 255.0 if image.dtype.kind == "f" and image.max(initial=0) <= 1.0 else 1.0
            image = np.clip(image * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if path.startswith(("http://", "https://")):
            from transformers.image_utils import load_image as load_url

            try:
                return load_url(path)
            except Exception as error:
                raise ValueError(f"Cannot read image from URL {path}: {error}") from error
        try:
            with Image.open(path) as opened:
                opened.load()  # decode now: a truncated file must fail here, naming the file
                return opened.copy()
        except FileNotFoundError:
            raise FileNotFoundError(f"Image file not found: {path}") from None
        except Exception as error:
            raise ValueError(f"Cannot read image {path}: {error}") from error
    raise TypeError(f"Expected a PIL image, numpy array or path, got {type(image).__name__}.")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any PIL mode.

    Like the original (``Image.convert("RGB")``) alpha is dropped, not composited. 16/32-bit greyscale (``I;16``,
    ``I``, ``F``) is scaled to 8 bits by its value range first, because PIL's direct conversion clips it.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max(initial=0)), 1.0)
        image = Image.fromarray(np.clip(array * (255.0 / top), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Pads to a square canvas of side ``max(w, h)``, image centred on the short axis (original ``expand2square``)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class RoboPointImageProcessor(BaseImageProcessor):
    r"""Pads to square with the CLIP mean colour (``image_aspect_ratio="pad"``) and applies CLIP preprocessing.

    Args:
        image_aspect_ratio (`str`, *optional*, defaults to `"pad"`):
            ``"pad"`` (RoboPoint) or ``"square"`` (plain CLIP resize + centre crop).
        size (`int`, *optional*, defaults to 336):
            Target of the shortest-edge resize, and side of the centre crop.
        image_mean (`Sequence[float]`, *optional*, defaults to the CLIP mean):
            Normalisation mean; ``int(255 * mean)`` is also the padding colour, as in the original.
        image_std (`Sequence[float]`, *optional*, defaults to the CLIP std):
            Normalisation standard deviation.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_aspect_ratio: str = "pad",
        size: int = 336,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        **kwargs,
    ):
        for legacy in ("crop_size", "resample", "do_resize", "do_center_crop", "do_rescale", "do_normalize"):
            kwargs.pop(legacy, None)
        super().__init__(**kwargs)
        if image_aspect_ratio not in ("pad", "square"):
            raise ValueError(f"image_aspect_ratio must be 'pad' or 'square', got {image_aspect_ratio!r}.")
        if isinstance(size, dict):
            size = size.get("shortest_edge", size.get("height"))
        self.image_aspect_ratio = image_aspect_ratio
        self.size = int(size)
        self.image_mean = [float(value) for value in image_mean]
        self.image_std = [float(value) for value in image_std]

    @property
    def background_color(self) -> tuple[int, int, int]:
        """Padding colour, ``int(255 * mean)`` per channel: (122, 116, 104) for CLIP."""
        return tuple(int(value * 255) for value in self.image_mean)

    def to_model_image(self, image) -> Image.Image:
        """The RGB ``size`` x ``size`` image the vision tower sees (before rescaling/normalising)."""
        image = to_rgb(load_image(image))
        if self.image_aspect_ratio == "pad":
            return self._pad_and_resize(image)
        width, height = image.size
        # Shortest edge -> size, the other edge rounded down as transformers' get_resize_output_image_size does.
        if width <= height:
            new_size = (self.size, int(self.size * height / width))
        else:
            new_size = (int(self.size * width / height), self.size)
        if new_size != image.size:
            image = image.resize(new_size, resample=Image.Resampling.BICUBIC)
        left = (image.width - self.size) // 2
        top = (image.height - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def _pad_and_resize(self, image: Image.Image) -> Image.Image:
        """``expand_to_square`` then a bicubic resize to ``size``, skipping the work on the padding of wide images.

        PIL resizes in two separable passes, horizontal then vertical, with a uint8 intermediate. For a wide image
        the padding is whole rows of one colour, whose horizontal pass is that colour again; so we run the
        horizontal pass on the image rows only, pad the narrow intermediate, and run the vertical pass. The
        result is bit-identical to resizing the padded square (tested on random sizes), and wide photos -- the
        common camera case -- skip most of the horizontal work.
        """
        width, height = image.size
        size = self.size
        if width <= height:  # square or tall: the padding shares rows with the image, nothing to skip
            square = expand_to_square(image, self.background_color)
            return square if square.size == (size, size) else square.resize((size, size), Image.Resampling.BICUBIC)
        rows = image if width == size else image.resize((size, height), Image.Resampling.BICUBIC)
        intermediate = Image.new("RGB", (size, width), self.background_color)
        intermediate.paste(rows, (0, (width - height) // 2))
        return intermediate if width == size else intermediate.resize((size, size), Image.Resampling.BICUBIC)

    def normalize_image(self, image: Image.Image) -> np.ndarray:
        """uint8 HWC -> float32 CHW, ``(x / 255 - mean) / std``, bit-identical to the original.

        The original rescales in float64 and rounds to float32 before normalising in float32; the order matters at
        the last bit (multiplying by a float32 1/255 instead differs by up to 4.8e-7).
        """
        array = (np.asarray(image, dtype=np.float64) * (1 / 255)).astype(np.float32)
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        return ((array - mean) / std).transpose(2, 0, 1)

    def _lookup_table(self) -> np.ndarray:
        """``[3, 256]`` table of :meth:`normalize_image` for every uint8 value: one gather per pixel, same floats."""
        levels = np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, axis=2)
        return self.normalize_image(Image.fromarray(levels))[:, 0, :]

    def preprocess(self, images, return_tensors: str | None = None, **kwargs) -> BatchFeature:
        """Preprocesses one image or a list of images (PIL, numpy, or file paths) of any sizes and modes."""
        if kwargs:
            raise TypeError(f"Unexpected arguments for RoboPointImageProcessor: {', '.join(sorted(kwargs))}.")
        if not isinstance(images, (list, tuple)):
            images = [images]
        lookup = self._lookup_table()
        pixel_values = np.empty((len(images), 3, self.size, self.size), dtype=np.float32)
        for index, image in enumerate(images):
            array = np.asarray(self.to_model_image(image))
            for channel in range(3):
                np.take(lookup[channel], array[:, :, channel], out=pixel_values[index, channel])
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def __call__(self, images, return_tensors: str | None = None, **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)


__all__ = ["RoboPointImageProcessor", "expand_to_square", "load_image", "to_rgb"]
