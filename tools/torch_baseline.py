#!/usr/bin/env python3
"""Train the same UNet with diffusers on PyTorch (CPU), as the baseline `petal train` is
measured against (issue 9, "Compare with the seed's own pipeline").

Same architecture and recipe as `petal train` (src/train/, README "Training"), written the way
diffusers' examples/unconditional_image_generation/train_unconditional.py writes it:

- UNet2DModel from a config.json (e.g. RUN/checkpoint-N/unet/config.json of a Petal run, or a
  built-in name tiny|small|cifar10-32 with the values of src/model/config.rs), fresh weights;
  DDPMScheduler with its defaults (linear betas 1e-4..0.02, 1000 steps), as Petal's fresh runs;
- images found recursively (jpg, jpeg, png, webp), shorter side resized to 32 with Lanczos and
  centre-cropped (as src/train/data.rs), random horizontal flips, pixels in [-1, 1]; shuffled
  every epoch, the last partial batch dropped;
- MSE between the predicted and the true noise at uniformly drawn timesteps;
- AdamW lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, eps 1e-8; linear warm-up then cosine
  (diffusers.optimization.get_cosine_schedule_with_warmup) over --steps; gradient clipping at
  global norm 1.0; EMA of the weights (diffusers.training_utils.EMAModel, use_ema_warmup,
  inv_gamma 1, power 3/4, max decay 0.9999).

Then it copies the EMA weights into the UNet, samples --samples images with DDPMPipeline
(50 steps, generator seeded with --seed) into a grid PNG laid out as `petal sample --out`
does (ceil(sqrt(N)) per row, no gaps), and saves the pipeline (DDPMPipeline.save_pretrained),
with loss.csv (step, loss, lr, seconds) beside it.

Usage:
  nice -n 15 python3 tools/torch_baseline.py --data ../shared/data/oxford-flowers-12 \\
      --config small --steps 2000 --batch 8 --samples 240 --out runs/torch-small
  petal eval --real HELD_OUT_DIR --generated runs/torch-small/samples.png

CPU only; --threads (default 1) sets torch's thread count.
"""

import argparse
import csv
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import diffusers
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")

# src/model/config.rs UNetConfig::builtin: (block_out_channels, norm_num_groups).
BUILTIN = {
    "cifar10-32": ((128, 256, 256, 256), 32),
    "small": ((32, 64, 64, 64), 8),
    "tiny": ((16, 32, 32, 32), 8),
}


def builtin_config(name):
    channels, groups = BUILTIN[name]
    return dict(
        sample_size=32, in_channels=3, out_channels=3, center_input_sample=False,
        time_embedding_type="positional", freq_shift=1, flip_sin_to_cos=False,
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        block_out_channels=list(channels), layers_per_block=2, mid_block_scale_factor=1,
        downsample_padding=0, dropout=0.0, act_fn="silu", attention_head_dim=None,
        norm_num_groups=groups, norm_eps=1e-6, resnet_time_scale_shift="default",
        add_attention=True)


def load_config(arg):
    if arg in BUILTIN:
        return builtin_config(arg)
    with open(arg) as f:
        cfg = json.load(f)
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def find_images(folder):
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTS):
                out.append(os.path.join(root, name))
    return out


def load_image(path, size):
    """(3, size, size) float32 in [-1, 1]: shorter side to `size` with Lanczos, centre crop."""
    img = Image.open(path).convert("RGB")
    iw, ih = img.size
    scale = max(size / ih, size / iw)
    sw, sh = max(round(iw * scale), size), max(round(ih * scale), size)
    img = img.resize((sw, sh), Image.LANCZOS)
    x0, y0 = (sw - size) // 2, (sh - size) // 2
    img = img.crop((x0, y0, x0 + size, y0 + size))
    a = np.asarray(img, dtype=np.float32) / 255.0 * 2.0 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def grid_png(images, path):
    """images (N, 3, H, W) in [0, 1] -> a grid PNG, ceil(sqrt(N)) per row, white empty slots."""
    n, _, h, w = images.shape
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, -(-n // cols))
    canvas = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)
    arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = arr[i]
    Image.fromarray(canvas).save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder of training images")
    ap.add_argument("--config", required=True, help="tiny|small|cifar10-32 or a UNet config.json")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--steps", type=int, required=True, help="optimizer steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--samples", type=int, default=16, help="images to sample at the end")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    diffusers.utils.logging.disable_progress_bar()

    paths = find_images(args.data)
    images, skipped = [], 0
    for p in paths:
        try:
            images.append(load_image(p, 32))
        except Exception as e:  # noqa: BLE001 - a file that does not decode is skipped, as Petal does
            print(f"warning: skipped {p}: {e}", file=sys.stderr)
            skipped += 1
    if not images:
        sys.exit(f"error: {args.data}: no usable images")
    data = torch.stack(images)
    steps_per_epoch = len(images) // args.batch
    if steps_per_epoch == 0:
        sys.exit(f"error: --batch {args.batch} is larger than the {len(images)} images")

    config = load_config(args.config)
    model = UNet2DModel(**config)
    params = sum(p.numel() for p in model.parameters())
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.95, 0.999),
                                  weight_decay=1e-6, eps=1e-8)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=args.warmup,
                                                   num_training_steps=args.steps)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0,
                   power=3 / 4, model_cls=UNet2DModel, model_config=model.config)
    print(f"{len(images)} images ({skipped} skipped), {steps_per_epoch} steps per epoch, "
          f"{args.steps} steps at batch {args.batch}; {params / 1e6:.2f}M parameters; "
          f"torch {torch.__version__}, diffusers {diffusers.__version__}, {args.threads} thread(s)",
          file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "loss.csv"), "w", newline="")
    writer = csv.writer(log)
    writer.writerow(["step", "epoch", "loss", "lr", "seconds"])
    g = torch.Generator().manual_seed(args.seed)
    started = time.time()
    model.train()
    step = 0
    order = None
    while step < args.steps:
        epoch, i = divmod(step, steps_per_epoch)
        if i == 0:
            order = torch.randperm(len(images), generator=g)
        x0 = data[order[i * args.batch:(i + 1) * args.batch]].clone()
        flip = torch.rand(x0.shape[0], generator=g) < 0.5
        x0[flip] = x0[flip].flip(-1)
        noise = torch.randn(x0.shape, generator=g)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],),
                                  generator=g).long()
        noisy = noise_scheduler.add_noise(x0, noise, timesteps)
        loss = F.mse_loss(model(noisy, timesteps).sample.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = lr_scheduler.get_last_lr()[0]
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        ema.step(model.parameters())
        step += 1
        seconds = time.time() - started
        writer.writerow([step, epoch, f"{loss.item():.6f}", f"{lr:.6e}", f"{seconds:.1f}"])
        if step % 10 == 0 or step == args.steps:
            log.flush()
            print(f"step {step}/{args.steps} epoch {epoch} loss {loss.item():.4f} lr {lr:.2e} "
                  f"{step / seconds:.3f} steps/s", file=sys.stderr)
    log.close()
    train_seconds = time.time() - started

    ema.copy_to(model.parameters())
    model.eval()
    pipe = DDPMPipeline(unet=model, scheduler=noise_scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(args.out)
    started = time.time()
    with torch.no_grad():
        out = pipe(batch_size=args.samples, generator=torch.Generator().manual_seed(args.seed),
                   num_inference_steps=args.sample_steps, output_type="np").images
    sample_seconds = time.time() - started
    grid = os.path.join(args.out, "samples.png")
    grid_png(torch.from_numpy(out).permute(0, 3, 1, 2), grid)
    summary = {"images": len(images), "skipped": skipped, "parameters": params,
               "steps": args.steps, "batch": args.batch, "train_seconds": round(train_seconds, 1),
               "samples": args.samples, "sample_steps": args.sample_steps,
               "sample_seconds": round(sample_seconds, 1), "threads": args.threads,
               "torch": torch.__version__, "diffusers": diffusers.__version__}
    with open(os.path.join(args.out, "baseline.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(f"wrote {grid} and the pipeline in {args.out} ({train_seconds:.0f} s training, "
          f"{sample_seconds:.0f} s sampling)", file=sys.stderr)


if __name__ == "__main__":
    main()
