#!/usr/bin/env python3
"""Summarise a Petal run's loss.csv: mean loss per window of steps, as a
Markdown table on stdout and, with --svg, a small line chart (no plotting
library needed).

  python3 tools/loss_curve.py runs/flowers/loss.csv --window 100 --svg runs/flowers/loss.svg
"""

import argparse
import csv


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--svg")
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.csv)))
    if not rows:
        raise SystemExit(f"{a.csv}: no steps logged")
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    print("| steps | mean loss | lr at end |")
    print("| --- | --- | --- |")
    means = []
    for i in range(0, len(rows), a.window):
        chunk = loss[i:i + a.window]
        m = sum(chunk) / len(chunk)
        means.append((steps[min(i + a.window, len(rows)) - 1], m))
        print(f"| {steps[i]}-{steps[min(i + a.window, len(rows)) - 1]} | {m:.4f} | {float(rows[min(i + a.window, len(rows)) - 1]['lr']):.2e} |")
    if a.svg:
        w, h, pad = 640, 320, 40
        top = max(loss)
        x = lambda s: pad + (s - steps[0]) / max(1, steps[-1] - steps[0]) * (w - 2 * pad)
        y = lambda v: h - pad - v / top * (h - 2 * pad)
        raw = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, loss))
        avg = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in means)
        svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="{w}" height="{h}" fill="white"/>
<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>
<text x="{pad}" y="{pad - 8}">loss (max {top:.3f}); grey: every step, blue: mean of {a.window}</text>
<text x="{w - pad}" y="{h - pad + 16}" text-anchor="end">step {steps[-1]}</text>
<text x="{pad}" y="{h - pad + 16}">step {steps[0]}</text>
<polyline points="{raw}" fill="none" stroke="#bbb" stroke-width="0.7"/>
<polyline points="{avg}" fill="none" stroke="#1f5fbf" stroke-width="2"/>
</svg>
"""
        open(a.svg, "w").write(svg)


if __name__ == "__main__":
    main()
