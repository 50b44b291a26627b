"""Command line: `genfast info`, `genfast bench` and `genfast profile` (also `python -m genfast ...`)."""

from __future__ import annotations

import argparse
import json
import sys


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    from .profile import SAMPLERS
    p.description = ("Profile a sampling loop per step: model, guidance, scheduler step and the "
                     "rest (p50 / p95), host syncs and allocations, side by side with the "
                     "diffusers scheduler when diffusers is installed. Default model: a built-in "
                     "small conv denoiser (no download).")
    p.add_argument("--model", metavar="MODULE:CALLABLE",
                   help="your model (called model(x, t)) or a no-argument factory returning it")
    p.add_argument("--pipeline", metavar="PATH",
                   help="a saved diffusers pipeline directory (its U-Net and scheduler config)")
    p.add_argument("--sampler", default="euler", choices=list(SAMPLERS),
                   help="default euler (multistep samplers need the multistep steps)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    p.add_argument("--batch", type=int, default=1, help="images per batch (default 1)")
    p.add_argument("--size", type=int, help="latent side (default 64, or the pipeline's)")
    p.add_argument("--guidance", type=float,
                   help="classifier-free guidance scale, 1 = off (default 7.5; 1 for an "
                        "unconditional pipeline)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--runs", type=int, default=3, help="timed loops (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed loops first (default 1)")
    p.add_argument("--no-diffusers", action="store_true",
                   help="skip the diffusers scheduler loop")
    p.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    p.add_argument("--trace", metavar="PATH", help="write a torch.profiler Chrome trace")
    p.add_argument("--plot", metavar="PATH.png", help="stacked bars per step (needs matplotlib)")
    p.add_argument("--seed", type=int, default=0)


def _profile(args) -> int:
    import torch

    from .bench.cli import UsageError, _output_path
    from .profile import profile
    try:
        for opt in ("json", "trace", "plot"):
            _output_path(f"--{opt}", getattr(args, opt))
        result = profile(args.model, pipeline=args.pipeline, sampler=args.sampler,
                         steps=args.steps, batch=args.batch, size=args.size,
                         guidance=args.guidance, device=args.device,
                         dtype=getattr(torch, args.dtype), runs=args.runs, warmup=args.warmup,
                         diffusers=not args.no_diffusers, trace=args.trace, plot=args.plot,
                         seed=args.seed)
    except (UsageError, ValueError) as e:
        print(f"genfast profile: {e}", file=sys.stderr)
        return 2
    print(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="versions, backends and why not, CPU SIMD level")
    p_info.add_argument("--json", action="store_true", help="print the info() dict as JSON")
    p_bench = sub.add_parser("bench", help="run the benchmark suites and print a table")
    from .bench.cli import add_arguments
    add_arguments(p_bench)
    p_prof = sub.add_parser("profile", help="where the time of a sampling loop goes, per step")
    _profile_arguments(p_prof)
    args = parser.parse_args(argv)
    if args.command == "info":
        from .info import format_info, info
        d = info()
        print(json.dumps(d, indent=2) if args.json else format_info(d))
        return 0
    if args.command == "profile":
        return _profile(args)
    from .bench.cli import run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
