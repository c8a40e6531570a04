"""Photo-like JPEGs for bench/embed.py: what a camera folder costs to decode, made offline.

Each image is a seeded mix of what makes real photos expensive to decode and compress: smooth
colour gradients (sky, walls), a few soft-edged shapes of other colours (objects), fine texture
(grain, foliage: band-passed noise) and sensor noise, saved as 4:2:0 JPEG at quality 90. A class
is a colour palette, so the folder is a valid ImageFolder with as many classes as asked.

    python bench/photos.py DIR [--count 200] [--size 500x375] [--classes 4] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def photo(width: int, height: int, palette: int, seed: int) -> Image.Image:
    """One photo-like RGB image, the same for the same arguments."""
    rng = np.random.default_rng([seed, palette, width, height])
    base = np.random.default_rng([palette]).uniform(30, 225, (2, 3))  # the class's two colours
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1.0) / 2.0
    img = base[0] + (base[1] - base[0]) * np.clip(ramp, 0, 1)[..., None]
    img += 25 * np.sin(xx[..., None] / rng.uniform(20, 80) + rng.uniform(0, 6, 3))  # lighting
    layer = Image.new("RGB", (width, height))
    mask = Image.new("L", (width, height))
    draw, mdraw = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(3, 8))):  # objects: ellipses and polygons, soft edges
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        x0, y0 = rng.uniform(-0.1, 0.9, 2) * (width, height)
        w, h = rng.uniform(0.1, 0.5, 2) * (width, height)
        if rng.random() < 0.5:
            box = [x0, y0, x0 + w, y0 + h]
            draw.ellipse(box, fill=colour), mdraw.ellipse(box, fill=255)
        else:
            pts = [(float(x0 + rng.uniform(0, w)), float(y0 + rng.uniform(0, h))) for _ in range(5)]
            draw.polygon(pts, fill=colour), mdraw.polygon(pts, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(2))
    alpha = np.asarray(mask, np.float32)[..., None] / 255.0
    img = img * (1 - alpha) + np.asarray(layer, np.float32) * alpha
    grain = rng.normal(0, 1, (height // 4 + 1, width // 4 + 1, 1)).astype(np.float32)
    grain = np.asarray(Image.fromarray(grain[..., 0]).resize((width, height), Image.BILINEAR))
    img += 18 * grain[..., None] + rng.normal(0, 6, img.shape)  # texture + sensor noise
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write_photos(folder: str | Path, count: int = 200, size: tuple[int, int] = (500, 375),
                 classes: int = 4, seed: int = 0, quality: int = 90) -> Path:
    """Write ``count`` JPEGs as ``folder/class<k>/<i>.jpg`` (ImageFolder layout); returns folder."""
    folder = Path(folder)
    for i in range(count):
        k = i % classes
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
        photo(*size, k, seed * 1_000_003 + i).save(folder / f"class{k}" / f"{i:05d}.jpg",
                                                   quality=quality)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--size", default="500x375")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    w, h = (int(v) for v in a.size.lower().split("x"))
    write_photos(a.folder, a.count, (w, h), a.classes, a.seed)


if __name__ == "__main__":
    main()
