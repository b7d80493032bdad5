"""Makes the Pillow resize fixtures that tests/data/transforms.rs compares `data::transforms::resize` with.

Run once (Pillow itself is the oracle; the product never runs Python):
    python3 -m venv /tmp/pilvenv && /tmp/pilvenv/bin/pip install pillow
    /tmp/pilvenv/bin/python tests/data/resize/make_fixtures.py
Inputs are deterministic patterns (smooth ramps, hard edges that make bicubic overshoot and clip,
and a patch of hashed noise), saved as PNG next to Pillow's outputs so the test reads both.
"""
import os
import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def pattern(w, h, seed):
    img = Image.new("RGB", (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            if x < w // 3:  # smooth ramps
                v = ((x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), ((x + y) * 97) % 256)
            elif x < 5 * w // 6 or y >= h // 2:  # hard edges: stripes and a checker
                v = (255 * ((x // 3) % 2), 255 * (((x // 5) + (y // 4)) % 2), 40 + 170 * ((y // 2) % 2))
            else:  # a patch of hashed noise
                k = (x * 73856093) ^ (y * 19349663) ^ (seed * 83492791)
                v = (k & 255, (k >> 8) & 255, (k >> 16) & 255)
            px[x, y] = v
    return img


CASES = [
    # (name, input w, h, output w, h, filter); sizes are (width, height) as Pillow writes them.
    ("up_37x23_to_64x128", 37, 23, 64, 128),
    ("down_300x150_to_128x256", 300, 150, 128, 256),
    ("down_300x150_to_256x128", 300, 150, 256, 128),
]
FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def main():
    for seed, (name, w, h, ow, oh) in enumerate(CASES):
        src = pattern(w, h, seed + 1)
        src.save(os.path.join(HERE, f"{name}.in.png"))
        for fname, f in FILTERS.items():
            src.resize((ow, oh), f).save(os.path.join(HERE, f"{name}.{fname}.png"))
    # torchvision's ImageNet evaluation Resize(256): the shorter side to 256, the longer side
    # int(256 * long / short), bilinear (what transforms.Resize(256) does on a PIL image).
    src = pattern(333, 287, 9)
    src.save(os.path.join(HERE, "imagenet_333x287.in.png"))
    w, h = src.size
    size = (int(256 * w / h), 256) if h <= w else (256, int(256 * h / w))
    src.resize(size, Image.BILINEAR).save(os.path.join(HERE, "imagenet_333x287.bilinear.png"))
    with open(os.path.join(HERE, "PILLOW_VERSION"), "w") as fh:
        fh.write(PIL.__version__ + "\n")


if __name__ == "__main__":
    main()
