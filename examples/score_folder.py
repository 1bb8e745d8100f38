"""Score every image of a folder of distorted images against the same-named reference, batching across pairs.

    python examples/score_folder.py REF_DIR DIST_DIR [--weights path/to/gsn.safetensors] [--out scores.csv]

The command line does the same (`python -m gsn_metric REF_DIR DIST_DIR --format csv`); this shows the API.
"""

import argparse
import csv
from pathlib import Path

import gsn_metric


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref_dir", type=Path)
    p.add_argument("dist_dir", type=Path)
    p.add_argument("--weights")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, help="CSV to write (default: print)")
    args = p.parse_args()

    names = sorted(f.name for f in args.dist_dir.iterdir() if (args.ref_dir / f.name).is_file())
    metric = gsn_metric.GSNScore(weights=args.weights, device=args.device, batch_size=args.batch_size)
    # iter_scores loads pairs lazily and packs the patches of consecutive pairs into one forward pass.
    scores = metric.iter_scores((args.ref_dir / n, args.dist_dir / n) for n in names)
    rows = list(zip(names, scores))
    if args.out:
        with open(args.out, "w", newline="") as f:
            csv.writer(f).writerows([("name", "score"), *rows])
    for name, score in sorted(rows, key=lambda r: r[1]):
        print(f"{score:8.4f}  {name}")


if __name__ == "__main__":
    main()
