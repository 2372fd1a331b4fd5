#!/usr/bin/env python3
"""Time diffusers' UNet2DModel + DDPMScheduler on PyTorch (CPU, or CUDA with --device cuda) -- a baseline for petal.

This is a measurement script, not a test. It prints one JSON document to stdout (progress
goes to stderr) and optionally writes it to --out FILE.

Measurements (each selectable with --only):
  forward  one UNet forward under torch.no_grad() (eval mode), per batch size in
           --forward-batches; one untimed warm-up call first.
  sample   the full DDPMPipeline sampling loop (DDPMPipeline.__call__ itself: initial
           noise, --steps x (unet + scheduler.step), final (x/2+0.5).clamp(0,1)),
           per batch size in --sample-batches; one untimed UNet forward warm-up first.
  train    one training step in train mode: add_noise, forward, mse_loss, backward,
           AdamW step (lr 1e-4, weight_decay 1e-2), per batch size in --train-batches.
           Each batch size runs in a fresh subprocess so that peak memories do not mix;
           peak memory is the increase of the process's peak RSS (getrusage ru_maxrss)
           over its value after the model, optimizer and inputs were built. It therefore
           includes activations, gradients and AdamW's two state tensors per parameter
           (allocated in the first, untimed warm-up step).

Every timing is repeated --repeats times; median and min are reported (seconds).
Weights are random (diffusers' default init, seed 0): speed does not depend on them.

Configs: --preset cifar10-32 (default) is exactly google/ddpm-cifar10-32's architecture
(35.7 M parameters); --config PATH takes any UNet2DModel config.json. The scheduler is
google/ddpm-cifar10-32's (linear 1e-4..0.02, 1000 steps, fixed_small, clip_sample) unless
--scheduler-config PATH is given.

Examples:
  python3 tools/bench/bench_torch.py --only forward --forward-batches 1
  python3 tools/bench/bench_torch.py --forward-batches 1,16 --sample-batches 1,16 \\
      --steps 50 --train-batches 16,64 --repeats 3 --out bench-torch.json
  python3 tools/bench/bench_torch.py --config tests/fixtures/mini/unet/config.json \\
      --forward-batches 1 --sample-batches 1 --steps 2 --train-batches 2 --repeats 1
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import diffusers
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

# google/ddpm-cifar10-32 (https://huggingface.co/google/ddpm-cifar10-32/blob/main/config.json)
CIFAR10_32 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,
    norm_num_groups=32,
    norm_eps=1e-6,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    time_embedding_type="positional",
    center_input_sample=False,
)
PRESETS = {"cifar10-32": CIFAR10_32}

CIFAR10_32_SCHEDULER = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                            beta_schedule="linear", clip_sample=True,
                            variance_type="fixed_small")

MEASUREMENTS = ("forward", "sample", "train")
MIB = 1024 * 1024


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def batches(text):
    return [int(b) for b in text.split(",") if b.strip()]


def load_unet_config(args):
    if args.config:
        with open(args.config) as f:
            cfg = json.load(f)
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        return os.path.abspath(args.config), cfg
    return args.preset, dict(PRESETS[args.preset])


def build(args):
    """(name, unet config, unet, scheduler) with random weights (seed 0)."""
    name, cfg = load_unet_config(args)
    torch.manual_seed(args.seed)
    unet = UNet2DModel(**cfg)
    if args.scheduler_config:
        scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(args.scheduler_config))
    else:
        scheduler = DDPMScheduler(**CIFAR10_32_SCHEDULER)
    return name, cfg, unet, scheduler


def image_shape(unet, batch):
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return (batch, unet.config.in_channels, *size)


DEVICE = torch.device("cpu")


def sync():
    """Waits for the device's queued work (CUDA launches are asynchronous)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def rss_mib():
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------------------------ measure

def bench_forward(unet, batch, repeats):
    unet.eval()
    x = torch.randn(image_shape(unet, batch), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    t = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(2)).to(DEVICE)

    def run():
        with torch.no_grad():
            unet(x, t)

    run()  # warm-up
    r = timed(run, repeats)
    r.update(batch=batch, images_per_s=batch / r["median_s"])
    return r


def bench_sample(unet, scheduler, batch, steps, repeats):
    unet.eval()
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():  # warm-up: one UNet forward at this batch size
        unet(torch.randn(image_shape(unet, batch), device=DEVICE), torch.tensor(999, device=DEVICE))

    def run():
        pipe(batch_size=batch, num_inference_steps=steps, output_type="pt",
             generator=torch.Generator().manual_seed(3))

    r = timed(run, repeats)
    r.update(batch=batch, steps=steps, per_step_s=r["median_s"] / steps,
             images_per_s=batch / r["median_s"])
    return r


def train_child(args):
    """Runs in a fresh process: one batch size, prints one JSON line."""
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    _, _, unet, scheduler = build(args)
    unet.to(DEVICE)
    batch = args._train_child
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=1e-2)
    g = torch.Generator().manual_seed(4)
    x0 = (torch.rand(image_shape(unet, batch), generator=g) * 2 - 1).to(DEVICE)
    noise = torch.randn(x0.shape, generator=g).to(DEVICE)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g).to(DEVICE)

    def step():
        noisy = scheduler.add_noise(x0, noise, timesteps)
        loss = F.mse_loss(unet(noisy, timesteps).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    baseline_rss, baseline_peak = rss_mib(), maxrss_mib()
    if DEVICE.type == "cuda":
        baseline_cuda = torch.cuda.memory_allocated() / MIB
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up (also allocates AdamW's state)
    r = timed(step, args.repeats)
    peak = maxrss_mib()
    r.update(batch=batch, images_per_s=batch / r["median_s"],
             peak_rss_increase_mib=peak - baseline_peak, peak_rss_mib=peak,
             baseline_rss_mib=baseline_rss)
    if DEVICE.type == "cuda":
        r.update(cuda_peak_allocated_increase_mib=torch.cuda.max_memory_allocated() / MIB - baseline_cuda)
    print(json.dumps(r))


def bench_train(args, batch):
    cmd = [sys.executable, os.path.abspath(__file__), "--_train-child", str(batch),
           "--threads", str(args.threads), "--repeats", str(args.repeats),
           "--seed", str(args.seed), "--device", args.device]
    cmd += ["--config", args.config] if args.config else ["--preset", args.preset]
    if args.scheduler_config:
        cmd += ["--scheduler-config", args.scheduler_config]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"batch": batch, "error": f"child exited with {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------- main

def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]))
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--preset", default="cifar10-32", choices=sorted(PRESETS))
    src.add_argument("--config", help="a UNet2DModel config.json (overrides --preset)")
    ap.add_argument("--scheduler-config", help="a DDPMScheduler scheduler_config.json")
    ap.add_argument("--only", default=",".join(MEASUREMENTS),
                    help="comma list of: forward, sample, train (default: all)")
    ap.add_argument("--forward-batches", default="1,16")
    ap.add_argument("--sample-batches", default="1,16")
    ap.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    ap.add_argument("--train-batches", default="16,64")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    ap.add_argument("--sample-repeats", type=int, default=0, help="timed runs per sampling loop (0: --repeats)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch.set_num_threads (default: all usable cores)")
    ap.add_argument("--seed", type=int, default=0, help="weight init seed")
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda (fp32, eager)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--_train-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._train_child is not None:
        train_child(args)
        return

    only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = set(only) - set(MEASUREMENTS)
    if unknown:
        ap.error(f"unknown measurement(s) in --only: {', '.join(sorted(unknown))}")

    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":
        # fp32 means fp32: no TF32 tensor-core shortcuts in matmuls or convolutions.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    diffusers.utils.logging.disable_progress_bar()
    load = os.getloadavg()
    if load[0] > 0.5:
        # Other busy processes wreck torch's OpenMP timings: with every core taken, each
        # parallel op can wait a scheduler tick at its barrier (seen: 10 ms -> 1.7 s).
        log(f"WARNING: load average {load[0]:.2f} before starting; timings will be unreliable "
            f"unless the machine is otherwise idle (or use --threads 1)")
    name, cfg, unet, scheduler = build(args)
    unet.to(DEVICE)
    n_params = sum(p.numel() for p in unet.parameters())
    log(f"{name}: {n_params / 1e6:.2f} M parameters, {args.threads} threads, "
        f"torch {torch.__version__}, diffusers {diffusers.__version__}")

    result = {
        "tool": "tools/bench/bench_torch.py",
        "backend": f"pytorch-{DEVICE.type}",
        "cuda_device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else None,
        "torch_version": torch.__version__,
        "diffusers_version": diffusers.__version__,
        "python_version": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "loadavg_at_start": list(load),
        "config": name,
        "unet_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "scheduler_config": {k: v for k, v in scheduler.config.items() if not k.startswith("_")},
        "parameters": n_params,
        "parameters_millions": round(n_params / 1e6, 2),
        "repeats": args.repeats,
    }

    if "forward" in only:
        result["forward"] = []
        for b in batches(args.forward_batches):
            r = bench_forward(unet, b, args.repeats)
            log(f"forward  batch {b:4d}: median {r['median_s']:.4f} s  min {r['min_s']:.4f} s")
            result["forward"].append(r)
    if "sample" in only:
        result["sample"] = []
        for b in batches(args.sample_batches):
            r = bench_sample(unet, scheduler, b, args.steps, args.sample_repeats or args.repeats)
            log(f"sample   batch {b:4d} x {args.steps} steps: median {r['median_s']:.3f} s  "
                f"min {r['min_s']:.3f} s")
            result["sample"].append(r)
    if "train" in only:
        del unet  # children build their own model
        result["train"] = []
        for b in batches(args.train_batches):
            r = bench_train(args, b)
            if "error" in r:
                log(f"train    batch {b:4d}: {r['error']}")
            else:
                log(f"train    batch {b:4d}: median {r['median_s']:.4f} s  min {r['min_s']:.4f} s"
                    f"  peak RSS +{r['peak_rss_increase_mib']:.0f} MiB")
            result["train"].append(r)

    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
