"""Fast frame drawing with numpy and Pillow (no matplotlib): labelled overlays and top-k bars.

Used by `gradcam_tf.callbacks` during training, where a matplotlib figure per frame would cost
more than the Grad-CAM pass itself. Text uses matplotlib's bundled DejaVu Sans when it is
installed (the font of the matplotlib pages), else Pillow's default font.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from collections.abc import Sequence

import numpy as np

__all__ = ["RIGHT", "WRONG", "OTHER", "Tile", "frame", "png_bytes", "save_bytes", "save_rgb"]

RIGHT = (26, 152, 80)  # green: the true class, a right prediction
WRONG = (215, 48, 39)  # red: a wrong prediction
OTHER = (150, 160, 175)  # grey: any other class
TEXT = (30, 30, 30)
BACKGROUND = (255, 255, 255)
_PAD = 6
_FONT_PX = 11
_TITLE_PX = 13


@functools.lru_cache(maxsize=8)
def font(size: int):
    """A TrueType font of `size` pixels (DejaVu Sans from matplotlib, else Pillow's default)."""
    from PIL import ImageFont

    try:
        import matplotlib

        path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
        return ImageFont.truetype(path, size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


@dataclasses.dataclass(frozen=True)
class Tile:
    """One output's panel of a frame.

    Attributes:
        label: the output's short name ("B3").
        picture: (H, W, 3) uint8 overlay.
        probs: (classes,) probabilities of this output for the image.
        true_class: the image's class id.
        class_names: one name per class.
    """

    label: str
    picture: np.ndarray
    probs: np.ndarray
    true_class: int
    class_names: Sequence[str]


def _bars_height(top_k: int) -> int:
    return top_k * (_FONT_PX + 5) + 4


def _resize(picture: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if picture.shape[0] == size and picture.shape[1] == size:
        return picture
    return np.asarray(Image.fromarray(picture).resize((size, size), Image.Resampling.BILINEAR))


def _draw_tile(draw, canvas, tile: Tile, x: int, y: int, size: int, top_k: int) -> None:
    probs = np.asarray(tile.probs, np.float64)
    predicted = int(np.argmax(probs))
    colour = RIGHT if predicted == tile.true_class else WRONG
    draw.text((x + size // 2, y), tile.label, fill=colour, font=font(_FONT_PX + 1), anchor="mt")
    y += _FONT_PX + 5
    canvas.paste(_as_image(_resize(tile.picture, size)), (x, y))
    draw.rectangle([x - 1, y - 1, x + size, y + size], outline=colour, width=2)
    y += size + 5
    name_width = int(size * 0.38)
    value_width = 30
    bar_left, bar_right = x + name_width + 3, x + size - value_width
    order = np.argsort(-probs, kind="stable")[:top_k]
    for rank, c in enumerate(order):
        row = y + rank * (_FONT_PX + 5)
        name = _fit(draw, str(tile.class_names[c]), name_width)
        draw.text((x + name_width, row), name, fill=TEXT, font=font(_FONT_PX), anchor="ra")
        fill = RIGHT if c == tile.true_class else OTHER
        width = max(1, int(round((bar_right - bar_left) * float(probs[c]))))
        draw.rectangle([bar_left, row + 1, bar_left + width, row + _FONT_PX], fill=fill)
        draw.text((x + size, row), f"{probs[c]:.2f}", fill=TEXT, font=font(_FONT_PX), anchor="ra")


def _fit(draw, text: str, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font(_FONT_PX)) <= width:
        return text
    while text and draw.textlength(text + "…", font=font(_FONT_PX)) > width:
        text = text[:-1]
    return text + "…"


def _as_image(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))


def frame(title: str, tiles: Sequence[Tile], size: int = 112, top_k: int = 3) -> np.ndarray:
    """A frame: a title line, then one tile per output side by side (label, overlay, bars).

    Args:
        title: the text of the first line.
        tiles: the panels, left to right.
        size: side of each overlay in pixels (bilinear resize).
        top_k: number of probability bars under each overlay.

    Returns:
        (height, width, 3) uint8 RGB.
    """
    from PIL import Image, ImageDraw

    size = max(size, 96)  # room for a class name, a bar and a value under each map
    width = _PAD + len(tiles) * (size + _PAD)
    height = _PAD + _TITLE_PX + 8 + (_FONT_PX + 5) + size + 5 + _bars_height(top_k) + _PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((_PAD, _PAD), title, fill=TEXT, font=font(_TITLE_PX))
    top = _PAD + _TITLE_PX + 8
    for i, tile in enumerate(tiles):
        _draw_tile(draw, canvas, tile, _PAD + i * (size + _PAD), top, size, top_k)
    return np.asarray(canvas)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 array encoded as PNG (fast zlib level 1)."""
    buffer = io.BytesIO()
    _as_image(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def save_bytes(path: str, data: bytes) -> str:
    """Writes `data` to `path` (parent folders created); returns the path."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def save_rgb(path: str, rgb: np.ndarray) -> str:
    """Writes an RGB uint8 array as PNG (parent folders created); returns the path."""
    return save_bytes(path, png_bytes(rgb))
