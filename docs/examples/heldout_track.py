"""Plot a per-base track written by ``python -m enigma_fast.score --per-base FILE.npz`` (docs/reading.md).

    python -m enigma_fast.score --model RUN/final --heldout --per-base heldout.npz --out heldout.tsv
    python docs/examples/heldout_track.py heldout.npz --out docs/img/heldout_track.png

Top: the surprisal ``-log2 p`` of every base of a ``--span``-base stretch of the first row (by default the middle of
its most predictable 1-kb bin), with its 25-base running mean. Bottom: the mean bits/base of every 1-kb bin of the
whole row, so the stretch can be seen in its surroundings. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("track", help="the .npz written by python -m enigma_fast.score --per-base")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--row", type=int, default=0, help="which record/stretch of the file")
    p.add_argument(
        "--start",
        type=int,
        default=None,
        help="first base of the close-up, from the row's start (default: in the lowest 1-kb bin)",
    )
    p.add_argument("--span", type=int, default=600, help="bases in the close-up")
    p.add_argument("--bin", type=int, default=1000, help="bases per bin of the overview")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    z = np.load(args.track)
    off = z["offsets"]
    track = z["values"][off[args.row] : off[args.row + 1]]
    name, first = str(z["ids"][args.row]), int(z["starts"][args.row])
    bits = -track / math.log(2)  # natural log -> bits
    mean = float(np.nanmean(bits))

    n = len(bits) // args.bin
    binned = np.nanmean(bits[: n * args.bin].reshape(n, args.bin), axis=1)
    centers = first + (np.arange(n) + 0.5) * args.bin
    start = args.start if args.start is not None else int(np.argmin(binned)) * args.bin + (args.bin - args.span) // 2
    a, b = max(0, start), min(max(0, start) + args.span, len(bits))

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.2), gridspec_kw={"height_ratios": [3, 2]})
    x = np.arange(first + a, first + b)
    ax1.bar(x, bits[a:b], width=1.0, color="#9ecae1", label="per base")
    run = np.convolve(np.nan_to_num(bits[a:b], nan=mean), np.ones(25) / 25, mode="valid")
    ax1.plot(x[12 : 12 + len(run)], run, color="#08519c", lw=1.5, label="25-base running mean")
    ax1.axhline(2.0, color="grey", ls=":", lw=1, label="2 bits (uniform)")
    ax1.axhline(mean, color="#e6550d", ls="--", lw=1, label=f"held-out mean {mean:.3f}")
    ax1.set_xlim(x[0], x[-1])
    ax1.set_ylabel("surprisal (bits)")
    ax1.set_title(f"{name}: per-base surprisal -log2 p(base | preceding bases), bases {x[0] + 1:,}-{x[-1] + 1:,}")
    ax1.legend(loc="upper right", fontsize=8, ncol=4)

    ax2.plot(centers, binned, color="#31a354", lw=1)
    ax2.axvspan(first + a, first + b, color="#e6550d", alpha=0.3, label="close-up above")
    ax2.axhline(mean, color="#e6550d", ls="--", lw=1)
    ax2.set_xlabel(f"position in {name} (bases)")
    ax2.set_ylabel(f"bits/base, {args.bin}-base bins")
    ax2.legend(loc="lower right", fontsize=8)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{int(v):,}"))
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}: row {args.row} ({name}, {len(bits):,} bases, mean {mean:.4f} bits/base)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
