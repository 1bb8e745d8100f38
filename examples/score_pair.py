"""Score the bundled example pair (or any two images) with GSN.

    python examples/score_pair.py [--weights path/to/gsn.safetensors] [REF DIST]
"""

import argparse
from pathlib import Path

import gsn_metric

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", nargs="?", default=HERE / "reference.png")
    p.add_argument("dist", nargs="?", default=HERE / "distorted.png")
    p.add_argument("--weights", help="weight file; default: the released default weights")
    p.add_argument("--device")
    args = p.parse_args()
    metric = gsn_metric.GSNScore(weights=args.weights, device=args.device)
    score = metric(args.ref, args.dist).item()
    print(f"GSN({Path(args.ref).name}, {Path(args.dist).name}) = {score:.4f}  "
          f"[{metric.info.score_name}, range {metric.info.score_range}, higher = better]")


if __name__ == "__main__":
    main()
