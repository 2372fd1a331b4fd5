#!/usr/bin/env python3
"""Petal vs diffusers on PyTorch, on this machine, in one run.

Runs `petal bench` (the adapter Petal picks: lavapipe on a machine without a GPU)
and tools/bench/bench_torch.py (PyTorch on the CPU) one after the other with the
same architecture and batch sizes (--kernels gpu and --torch-device cuda on a
machine with an NVIDIA GPU: tools/bench/gpu.sh), then prints a table of seconds and the ratio
Petal / PyTorch (below 1: Petal is faster). A measurement, not a test.

  cargo build --release
  python3 tools/bench/compare.py --forward-batches 1,16 --sample-batches 1,16 --train-batches 16,64
  python3 tools/bench/compare.py --config small --train-batches 64 --forward-batches '' --sample-batches ''

Built-in architectures: cifar10-32 (google/ddpm-cifar10-32, 35.7M parameters),
small, tiny (Petal's); or a config.json path.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def petal_config_json(name):
    """A config.json for bench_torch.py of a Petal built-in architecture."""
    if name == "cifar10-32":
        return None  # bench_torch.py's preset
    if os.path.exists(name):
        return name
    widths = {"small": [32, 64, 64, 64], "tiny": [16, 32, 32, 32]}[name]
    groups = {"small": 8, "tiny": 8}[name]
    cfg = dict(
        _class_name="UNet2DModel", sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=widths, norm_num_groups=groups, attention_head_dim=None,
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6,
    )
    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(cfg, f)
    f.close()
    return f.name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--petal", default=os.path.join(ROOT, "target", "release", "petal"))
    ap.add_argument("--config", default="cifar10-32")
    ap.add_argument("--forward-batches", default="1,16")
    ap.add_argument("--sample-batches", default="1,16")
    ap.add_argument("--train-batches", default="")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample-repeats", type=int, default=2, help="timed runs of each sampling loop")
    ap.add_argument("--out", help="write both JSON results and the table here (a folder)")
    ap.add_argument("--kernels", default="auto", help="petal's kernel family: auto, cpu or gpu")
    ap.add_argument("--torch-device", default="cpu", help="PyTorch's device: cpu or cuda (fp32, eager)")
    ap.add_argument("--profile", action="store_true", help="petal bench --profile: seconds per op kind too")
    a = ap.parse_args()

    only = [m for m, b in (("forward", a.forward_batches), ("sample", a.sample_batches), ("train", a.train_batches)) if b]
    petal_cmd = [a.petal, "bench", "--config", a.config, "--forward-batches", a.forward_batches,
                 "--sample-batches", a.sample_batches, "--train-batches", a.train_batches,
                 "--steps", str(a.steps), "--repeats", str(a.repeats), "--sample-repeats", str(a.sample_repeats),
                 "--kernels", a.kernels] + (["--profile"] if a.profile else [])
    print("$ " + " ".join(petal_cmd), file=sys.stderr)
    petal = json.loads(subprocess.run(petal_cmd, check=True, stdout=subprocess.PIPE).stdout)

    torch_cmd = [sys.executable, os.path.join(HERE, "bench_torch.py"), "--only", ",".join(only),
                 "--forward-batches", a.forward_batches or "1", "--sample-batches", a.sample_batches or "1",
                 "--train-batches", a.train_batches or "1", "--steps", str(a.steps), "--repeats", str(a.repeats),
                 "--sample-repeats", str(a.sample_repeats), "--device", a.torch_device]
    cfg = petal_config_json(a.config)
    if cfg:
        torch_cmd += ["--config", cfg]
    print("$ " + " ".join(torch_cmd), file=sys.stderr)
    torch = json.loads(subprocess.run(torch_cmd, check=True, stdout=subprocess.PIPE).stdout)

    rows = []
    for kind, key in (("forward", "forward_b{}_s"), ("sample", "sample%d_b{}_s" % a.steps), ("train", "train_b{}_s")):
        for r in torch.get(kind, []):
            b = r["batch"]
            p = petal.get(key.format(b))
            t = r.get("median_s")
            if p is None or t is None:
                continue
            label = {"forward": "UNet forward", "sample": f"{a.steps}-step sample", "train": "training step"}[kind]
            extra = ""
            if kind == "train":
                extra = f" | Petal GPU memory {petal.get(f'train_b{b}_gpu_mib', 0):.0f} MiB, PyTorch peak " + (
                    f"CUDA memory +{r['cuda_peak_allocated_increase_mib']:.0f} MiB" if "cuda_peak_allocated_increase_mib" in r
                    else f"RSS +{r.get('peak_rss_increase_mib', 0):.0f} MiB")
            rows.append(f"| {label} | {b} | {p:.3f} | {t:.3f} | {p / t:.2f}{extra} |")
    table = "\n".join([
        f"Architecture {a.config} ({petal['parameters'] / 1e6:.1f}M parameters, "
        f"{petal['gflop_per_image_forward']:.2f} GFLOP per image forward)",
        f"Petal on: {petal['adapter']}",
        (f"PyTorch {torch.get('torch_version', '?')} on {torch.get('cuda_device')} (CUDA, fp32, eager, TF32 off)"
         if torch.get("cuda_device") else
         f"PyTorch {torch.get('torch_version', '?')} on {torch.get('threads', '?')} CPU threads"),
        "",
        "| what | batch | Petal s | PyTorch s | Petal / PyTorch |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ])
    print(table)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        for name, data in (("petal.json", petal), ("torch.json", torch)):
            with open(os.path.join(a.out, name), "w") as f:
                json.dump(data, f, indent=2)
        with open(os.path.join(a.out, "table.md"), "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
