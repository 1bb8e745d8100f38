"""``python -m gsn_metric``: score image pairs from the shell.

    python -m gsn_metric ref.png dist.png              # one pair: prints its score
    python -m gsn_metric refs/ dists/                  # two folders: pairs by file name
    python -m gsn_metric --pairs pairs.csv             # a CSV with columns ref,dist (relative to the CSV)
    python -m gsn_metric ref.png dist.png --map out.png   # also a picture of where the damage is
    python -m gsn_metric ref.png dist.png --precision bf16    # faster on GPUs and bf16 CPUs; scores move a little
    python -m gsn_metric export-onnx gsn.onnx [--int8]       # the network for ONNX Runtime (onnx_export.py)
    python -m gsn_metric --pairs pairs.csv --out scores.csv [--resume]   # streamed to a file; a killed run resumes
    torchrun --nproc-per-node 4 -m gsn_metric --pairs pairs.csv --out scores.csv   # several processes / GPUs

Scores go to stdout (text, CSV or JSON), or with ``--out`` to a file, row by row as they are made
(:mod:`.score_file`); messages and the progress bar go to stderr, so output can be piped. Exit codes: 0 all
pairs scored, 1 an input or weight file could not be used (the message says which and why; the other pairs are
still scored and printed), 2 bad command-line usage, 130 interrupted (Ctrl-C; with ``--out``, what was scored
is in the file and ``--resume`` continues).

The progress bar is tqdm's: huggingface-hub already depends on it, so it costs no extra dependency, and it
turns itself off when stderr is not a terminal.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from .patches import PATCH_MODES
from .precision import PRECISIONS

if TYPE_CHECKING:
    import torch

    from .metric import GSNScore

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


# Pairs scored together (a failure inside the network is retried pair by pair within one chunk), at most
# this many, and no more loaded pixels than this (2^24 pixels per side: ~400 MB of float32 for both sides).
_CHUNK_PAIRS, _CHUNK_PIXELS = 64, 2**24


class UsageError(Exception):
    """A problem with what was asked for on the command line (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gsn_metric",
        description="Score distorted images against their references with GSN (higher = better).",
        epilog="Exit codes: 0 ok, 1 an input or weight file could not be used, 2 bad usage. "
               "Also: python -m gsn_metric export-onnx OUT.onnx [--int8] (the network for ONNX Runtime; "
               "export-onnx --help).",
    )
    p.add_argument("ref", nargs="?", help="reference image, or folder of reference images")
    p.add_argument("dist", nargs="?", help="distorted image, or folder of distorted images with the same names")
    p.add_argument("--pairs", metavar="CSV", help="CSV of pairs with columns ref,dist (paths relative to the CSV)")
    p.add_argument("--weights", help="weight file (.safetensors) or released name; default: the released default")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the GPU if there is one)")
    p.add_argument("--batch-size", type=int, default=32, help="patches per forward pass (default 32)")
    p.add_argument("--patches", choices=PATCH_MODES, default="five",
                   help="five: the paper's 4 corners + centre (default); grid: tiles covering the image; full")
    p.add_argument("--stride", type=int,
                   help="for --patches grid: the largest gap between tiles in pixels (default half a patch)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="arithmetic: fp32 (default: the same scores on every machine); bf16 (GPUs and CPUs with "
                        "native bfloat16): about 2× faster on a CPU, scores move by up to about 0.02, for ranking "
                        "many outputs; int8 (CPU, experimental): about 2.8× faster, scores move by up to "
                        "about 0.5, see README 'Precision'")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="output format (default text)")
    p.add_argument("--map", metavar="PNG|DIR",
                   help="also draw where GSN sees the damage (reference | distorted | damage map): one pair writes "
                        "this image file, several write one PNG per pair into this folder")
    p.add_argument("--out", metavar="FILE.csv|FILE.jsonl",
                   help="write each pair's score to this file as it is scored (CSV or JSON lines, by the suffix), "
                        "flushed, so a killed run keeps what it did; needed under torchrun")
    p.add_argument("--resume", action="store_true",
                   help="with --out: continue a killed run, skipping the pairs FILE already holds (refused if "
                        "FILE was made with other weights or options)")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    return p


def discover_pairs(args: argparse.Namespace) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """The (reference, distorted) paths the arguments ask for, and how to show them in the output (a pairs
    CSV's own values; the paths otherwise); raises UsageError if they make no sense."""
    if args.pairs:
        if args.ref or args.dist:
            raise UsageError("give either REF DIST or --pairs CSV, not both")
        shown = _pairs_from_csv(Path(args.pairs))
        base = Path(args.pairs).parent
        return [(base / r, base / d) for r, d in shown], shown
    pairs = _paths_from_arguments(args)
    return pairs, [(str(r), str(d)) for r, d in pairs]


def _paths_from_arguments(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    if not (args.ref and args.dist):
        raise UsageError("give a reference and a distorted image (or two folders, or --pairs CSV)")
    ref, dist = Path(args.ref), Path(args.dist)
    for path in (ref, dist):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
    if ref.is_dir() != dist.is_dir():
        raise UsageError(f"{ref} and {dist} must both be files or both be folders")
    return _pairs_from_folders(ref, dist) if ref.is_dir() else [(ref, dist)]


def _pairs_from_folders(ref_dir: Path, dist_dir: Path) -> list[tuple[Path, Path]]:
    """Pairs by file name; where names differ only in the extension (PNG references, JPEG distortions) by stem,
    said on stderr. Broken links are reported as such, not as images without a partner."""
    def images(folder: Path) -> dict[str, Path]:
        # Hidden files are skipped: macOS leaves "._name.png" metadata files beside images on shared drives.
        found = {p.name: p for p in folder.iterdir()
                 if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}
        broken = sorted(name for name, p in found.items() if p.is_symlink() and not p.exists())
        if broken:
            print(f"gsn_metric: {len(broken)} broken symbolic link(s) in {folder} are skipped: "
                  f"{', '.join(broken[:5])}{' ...' if len(broken) > 5 else ''}", file=sys.stderr)
        return {name: p for name, p in found.items() if p.is_file()}

    refs, dists = images(ref_dir), images(dist_dir)
    pairs = {name: (refs[name], dists[name]) for name in refs.keys() & dists.keys()}

    def unique_stems(names: set[str]) -> dict[str, str]:
        stems: dict[str, list[str]] = {}
        for name in names:
            stems.setdefault(Path(name).stem, []).append(name)
        return {stem: found[0] for stem, found in stems.items() if len(found) == 1}

    ref_stems, dist_stems = unique_stems(refs.keys() - pairs.keys()), unique_stems(dists.keys() - pairs.keys())
    for stem in sorted(ref_stems.keys() & dist_stems.keys()):
        r, d = ref_stems[stem], dist_stems[stem]
        pairs[d] = (refs[r], dists[d])
        print(f"gsn_metric: paired {r} with {d} by name without extension", file=sys.stderr)
    used = {p.name for pair in pairs.values() for p in pair}
    lonely = sorted((refs.keys() | dists.keys()) - used)
    if lonely:
        cased: dict[str, list[str]] = {}
        for name in lonely:
            cased.setdefault(name.lower(), []).append(name)
        same = [" / ".join(v) for v in cased.values() if len(v) > 1]
        hint = f"; names differing only in case ({', '.join(same[:3])}) can be paired with --pairs CSV" if same else ""
        print(f"gsn_metric: {len(lonely)} image(s) have no partner of the same name and are skipped: "
              f"{', '.join(lonely[:5])}{' ...' if len(lonely) > 5 else ''}{hint}", file=sys.stderr)
    if not pairs:
        raise UsageError(f"no image names in common between {ref_dir} and {dist_dir}")
    return [pairs[name] for name in sorted(pairs)]


def _pairs_from_csv(path: Path) -> list[tuple[str, str]]:
    """The (ref, dist) values of a pairs CSV, as written (relative to its folder)."""
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {path} does not exist")
    # utf-8-sig: spreadsheet programs start their UTF-8 CSVs with a byte-order mark, which would hide "ref".
    with open(path, newline="", encoding="utf-8-sig") as f:
        # Header names in any case, spaces after the commas ("ref, dist") ignored.
        reader = csv.DictReader(f, skipinitialspace=True)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        if not {"ref", "dist"} <= columns.keys():
            raise UsageError(f"{path} needs a header with columns 'ref' and 'dist', found {reader.fieldnames}")
        pairs = []
        for row in reader:
            ref, dist = (row[columns[c]].strip() if row[columns[c]] else "" for c in ("ref", "dist"))
            if not ref or not dist:
                raise UsageError(f"{path} line {reader.line_num}: needs both a ref and a dist path")
            pairs.append((ref, dist))
    if not pairs:
        raise UsageError(f"{path} lists no pairs")
    return pairs


def format_scores(pairs: Sequence[tuple[str | Path, str | Path]], scores: Sequence[float | None], errors: dict[int, str],
                  fmt: str, score_name: str) -> str:
    """Render scores as text (one pair: the bare score; several: 'distorted<TAB>score'), CSV or JSON.

    Pairs that could not be scored (``scores[i]`` None, ``errors[i]`` why) are left out of text output, and
    have an empty score and their error in CSV (column ``error``) and JSON (``"score": null``)."""
    if fmt == "json":
        rows = [{"ref": str(r), "dist": str(d), "score": s, **({"error": errors[i]} if i in errors else {})}
                for i, ((r, d), s) in enumerate(zip(pairs, scores))]
        return json.dumps({"score_name": score_name, "higher_is_better": True, "pairs": rows}, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["ref", "dist", "score", "error"])
        writer.writerows([str(r), str(d), "" if s is None else f"{s:.6f}", errors.get(i, "")]
                         for i, ((r, d), s) in enumerate(zip(pairs, scores)))
        return out.getvalue().rstrip("\n")
    if len(pairs) == 1:
        return "" if scores[0] is None else f"{scores[0]:.6f}"
    return "\n".join(f"{d}\t{s:.6f}" for (_, d), s in zip(pairs, scores) if s is not None)


def score_pairs(metric: GSNScore, pairs: Sequence[tuple[Path, Path]], progress: bool,
                on_result: Callable[[int, float | None, str | None], None] | None = None,
                independent: bool = False) -> tuple[list[float | None], dict[int, str]]:
    """Score ``pairs`` in order, with a progress bar on stderr if asked for and stderr is a terminal.

    A pair that cannot be scored does not stop the others: each pair is read and checked before it joins a
    batch (unreadable file, size mismatch, an image under 2×2 pixels), and pairs are scored in chunks, so a
    failure inside the network (e.g. out of memory) makes that chunk's pairs be retried one by one and only
    the pair that fails again is lost. Returns the scores (None where a pair failed) and
    ``{pair index: "pair REF | DIST: why"}`` for the failures. With ``on_result(i, score, error)``, called as
    each pair's result is known (not necessarily in order: a failed read is known before the chunk is scored),
    the scores are handed over rather than kept (all None), so memory stays flat over any number of pairs.

    ``independent``: each pair's distorted patches get forward passes of their own (its reference still encoded
    once per run of pairs that share it), so that a score does not depend on which other pairs shared its batch
    (convolution libraries round differently at other batch sizes, ~1e-7): the same pair scores the same in any
    shard, after any resume. Packing several pairs per pass (the default) is faster on GPUs.
    """
    from .images import check_pair, to_batch  # imports torch: only once the arguments are known to be good

    errors: dict[int, str] = {}

    last: tuple[Path | None, torch.Tensor | None] = (None, None)

    def readable() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        nonlocal last
        for i, (ref, dist) in enumerate(pairs):
            try:
                # The same reference file as the pair before: the same tensor, which iter_scores then encodes
                # once for the whole run of pairs (GSNScore.encode_reference).
                r = last[1] if last[0] == ref and last[1] is not None else to_batch(ref, name="reference")[0]
                last = (ref, r)
                d = to_batch(dist, name="distorted")[0]  # errors name the side and the file
                for side, path, img in (("reference", ref, r), ("distorted", dist, d)):
                    if min(img.shape[-2:]) < 2:
                        raise ValueError(f"{side} {path} is {img.shape[-1]}×{img.shape[-2]} pixels, too small to "
                                         "assess (GSN needs at least 2×2)")
                check_pair(r[None], d[None])
            except (OSError, ValueError) as err:
                fail(i, f"pair {ref} | {dist}: {err}")
                continue
            yield i, r, d

    def score_chunk(chunk: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        try:
            results = _independent_scores(metric, chunk) if independent else \
                list(metric.iter_scores((r, d) for _, r, d in chunk))
        except (RuntimeError, ValueError) as err:
            if len(chunk) == 1:
                i = chunk[0][0]
                fail(i, f"pair {pairs[i][0]} | {pairs[i][1]}: {type(err).__name__}: {err}")
                return
            for one in chunk:  # find the pair that fails; the others are scored
                score_chunk([one])
            return
        for (i, _, _), score in zip(chunk, results):
            bar.update()
            if on_result:
                on_result(i, score, None)
            else:
                scores[i] = score

    def fail(i: int, why: str) -> None:
        errors[i] = why
        bar.update()
        if on_result:
            on_result(i, None, why)

    scores: list[float | None] = [None] * len(pairs)
    with tqdm(total=len(pairs), unit="pair", disable=not progress or None, file=sys.stderr) as bar:
        # Chunks of pairs: batching and reference reuse inside a chunk, failures contained to one chunk.
        chunk: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for item in readable():
            chunk.append(item)
            if len(chunk) == _CHUNK_PAIRS or sum(r[0].numel() for _, r, _ in chunk) >= _CHUNK_PIXELS:
                score_chunk(chunk)
                chunk = []
        if chunk:
            score_chunk(chunk)
    return scores, errors


def _independent_scores(metric: GSNScore, chunk: list[tuple[int, torch.Tensor, torch.Tensor]]) -> list[float]:
    """One pair per forward pass, the reference encoded once for consecutive pairs sharing its tensor."""
    import torch

    out, encoded = [], None
    with torch.inference_mode():
        for _, r, d in chunk:
            if encoded is None or encoded[0] is not r:
                encoded = (r, metric.encode_reference(r))
            out.append(float(encoded[1](d[None])[0]))
    return out


def _map_paths(target: Path, pairs: Sequence[tuple[Path, Path]]) -> list[Path]:
    """Where ``--map`` writes each pair's picture: the file itself for one pair, else DIR/NNNN_<dist stem>.png."""
    if len(pairs) == 1 and not target.is_dir():
        return [target]
    if target.exists() and not target.is_dir():
        raise UsageError(f"--map {target}: several pairs need a folder (one picture per pair), not a file")
    return [target / f"{i:04d}_{dist.stem}.png" for i, (_, dist) in enumerate(pairs)]


def write_maps(metric: GSNScore, pairs: Sequence[tuple[Path, Path]], scores: Sequence[float | None],
               paths: Sequence[Path]) -> None:
    """Draws each scored pair's damage map (``GSNScore.damage_map``) into ``paths`` (see :mod:`figure`)."""
    from .figure import damage_figure
    from .images import load_image
    from .patches import patch_boxes

    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for (ref, dist), score, path in zip(pairs, scores, paths):
        if score is None:
            continue
        r, d = load_image(ref), load_image(dist)
        damage = metric.damage_map(r[None], d[None])[0, 0]
        h, w = r.shape[-2:]
        boxes = patch_boxes(h, w, metric.patches, metric.info.patch_size, metric.stride)
        damage_figure(r, d, damage, score, metric.info.score_name, boxes, title=f"{ref.name} | {dist.name}").save(path)


def _check_device(device: str | None) -> None:
    """A device name torch does not know is bad usage (exit 2); a known one that is absent is exit 1."""
    import torch

    if device is not None:
        try:
            torch.device(device)
        except RuntimeError:
            raise UsageError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:1") from None


# Above this many pairs on the CPU in fp32 (about 3.3 s each on 2 cores), a faster precision is worth a line.
_LONG_CPU_RUN = 100


def _suggest_precision(metric: GSNScore, n_pairs: int) -> None:
    """Once, on a long fp32 run on a CPU with native bfloat16: say that bf16 exists and how far it moves scores."""
    from . import sharding
    from .precision import cpu_has_fast_bf16

    # int8 is not suggested: it changes rankings (README, "Precision")
    if metric.precision != "fp32" or metric._param.device.type != "cpu" or n_pairs < _LONG_CPU_RUN \
            or sharding.rank_and_world()[0] != 0 or not cpu_has_fast_bf16():
        return
    print(f"gsn_metric: {n_pairs} pairs in fp32 on the CPU; --precision bf16 is about 2× faster on this CPU and "
          "moves scores by at most about 0.02 (README, 'Precision'); keep fp32 for numbers to publish",
          file=sys.stderr)


def _score_to_file(args: argparse.Namespace, metric: GSNScore, pairs: Sequence[tuple[Path, Path]],
                   shown: Sequence[tuple[str, str]]) -> int:
    """``--out``: score into the file, each process its shard under torchrun (:mod:`.score_file`)."""
    from . import score_file, sharding

    rank, _ = sharding.rank_and_world()
    settings = {"weights_sha256": metric.info.sha256, "patches": metric.patches, "stride": metric.stride,
                "patch_size": metric.info.patch_size, "score_name": metric.info.score_name,
                "precision": metric.precision}
    def score(indices: list[int], put: Callable[[int, float | None, str | None], None]) -> None:
        # independent: a row must not depend on its shard or on where a killed run stopped
        _, errors = score_pairs(metric, [pairs[i] for i in indices], not args.no_progress and len(indices) > 1,
                                on_result=lambda j, s, e: put(indices[j], s, e), independent=True)
        for message in errors.values():
            print(f"gsn_metric: error: {message}", file=sys.stderr)

    before, _, failed = score_file.score_into(Path(args.out), shown, settings, args.resume, score,
                                              about={"weights": str(metric.info.name or metric.info.path)})
    if rank == 0:
        print(f"gsn_metric: {args.out} holds all {len(pairs)} pairs" + (f" ({before} from before this run)"
              if before else "") + (f"; {failed} could not be scored (their rows say why)" if failed else ""),
              file=sys.stderr)
    # Process 0 speaks for the run (FILE's rows, every process's): another's non-zero exit would make torchrun
    # stop the others.
    return 1 if rank == 0 and failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    from . import sharding

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export-onnx"]:
        from .onnx_export import main as export_main

        return export_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    world = sharding.rank_and_world()[1]
    try:
        pairs, shown = discover_pairs(args)
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.resume and not args.out:
            raise UsageError("--resume needs --out FILE, the file of the run to continue")
        if world > 1 and not args.out:
            raise UsageError("under torchrun, give --out FILE: each process writes its part of it")
        if world > 1 and args.map:
            raise UsageError("--map draws from one process: run it without torchrun")
        if args.out:
            from .score_file import file_format

            try:
                file_format(Path(args.out))
            except ValueError as err:
                raise UsageError(str(err)) from None
        from .metric import GSNScore  # after argument checks: importing torch takes a while

        map_paths = _map_paths(Path(args.map), pairs) if args.map else None
        _check_device(args.device)
        if args.stride is not None and args.patches != "grid":
            raise UsageError("--stride applies to --patches grid only")
        sharding.start()
        metric = GSNScore(weights=args.weights, device=sharding.device_for_rank(args.device), patches=args.patches,
                          batch_size=args.batch_size, stride=args.stride, precision=args.precision)
        _suggest_precision(metric, len(pairs))
        if args.out:
            return _score_to_file(args, metric, pairs, shown)
        scores, errors = score_pairs(metric, pairs, progress=not args.no_progress and len(pairs) > 1)
        if map_paths:
            write_maps(metric, pairs, scores, map_paths)
    except UsageError as err:
        parser.print_usage(sys.stderr)
        print(f"gsn_metric: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as err:
        print(f"gsn_metric: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = (f"; the pairs scored so far are in {args.out}: run the same command with --resume to finish"
                if args.out else "")
        print(f"gsn_metric: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        sharding.finish()
    for message in errors.values():
        print(f"gsn_metric: error: {message}", file=sys.stderr)
    if errors and len(pairs) > 1:
        print(f"gsn_metric: {len(errors)} of {len(pairs)} pairs could not be scored (listed above); the others "
              "were", file=sys.stderr)
    output = format_scores(shown, scores, errors, args.format, metric.info.score_name)
    if output:
        print(output)
    return 1 if errors else 0
