#!/usr/bin/env python3
"""Mean absolute pixel difference (0-255) between PNG images of the same size.

    python3 tools/image_diff.py fp32.png fp16.png int8.png

prints each image after the first against the first: mean |a - b| over every
pixel and channel, and the largest difference. Used for README's precision
figures (50-step samples from the same seed in FP32, FP16 and INT8).
"""
import sys

import numpy as np
from PIL import Image


def load(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def main(paths):
    if len(paths) < 2:
        sys.exit(__doc__)
    ref = load(paths[0])
    for p in paths[1:]:
        img = load(p)
        if img.shape != ref.shape:
            sys.exit(f"{p}: size {img.shape} differs from {paths[0]}'s {ref.shape}")
        d = np.abs(img - ref)
        print(f"{p}: mean abs diff {d.mean():.3f}, max {d.max():.0f} (0-255) against {paths[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
