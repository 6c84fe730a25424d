"""`python -m medsight_lab train | evaluate | release | autograder`: a thin face over the package's
functions."""

from __future__ import annotations

import argparse
import json
import sys

from . import (SyntheticRadiologyDataset, default_model, evaluate, load_checkpoint,
               save_checkpoint, set_seed, train)


def _train(args):
    set_seed(args.seed)
    dataset = SyntheticRadiologyDataset(args.samples, seed=args.seed)
    model = default_model(dataset)
    history = train(model, dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, device=args.device, progress=not args.quiet)
    save_checkpoint(model, args.out)
    print(f"saved {args.out} (final loss {history['loss'][-1]:.4f})")


def _evaluate(args):
    model = load_checkpoint(args.checkpoint, device=args.device)
    metrics = evaluate(model, SyntheticRadiologyDataset(args.samples, seed=args.seed),
                       num_beams=args.beams)
    if args.json:
        json.dump(metrics, sys.stdout, indent=2)
        print()
        return
    print(f"{'metric':<32}{'value':>8}{'chance':>9}")
    for key, value in metrics.items():
        if isinstance(value, float) and not key.endswith("_chance"):
            chance = metrics.get(f"{key}_chance")
            print(f"{key:<32}{value:>8.3f}" + (f"{chance:>9.3f}" if chance is not None else ""))
    print(f"\n{'finding':<16}{'precision':>10}{'recall':>8}{'f1':>7}{'support':>9}")
    for name, s in metrics["per_finding"].items():
        print(f"{name:<16}{s['precision']:>10.3f}{s['recall']:>8.3f}{s['f1']:>7.3f}"
              f"{s['support']:>9}")


def _release(args):
    from .grading.release import release
    out = release(args.source, args.out, build_html=not args.no_html,
                  repository_url=args.repository_url)
    print(f"student edition written to {out}")


def _autograder(args):
    from .grading.autograder import build_bundle
    out = build_bundle(args.out, args.reference)
    print(f"Gradescope autograder bundle written to {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m medsight_lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the course's model on the synthetic dataset")
    p.add_argument("--out", default="_build/model.pt", help="checkpoint file to write")
    p.add_argument("--samples", type=int, default=1600)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)

    p = sub.add_parser("evaluate", help="free-running evaluation of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--seed", type=int, default=1, help="seed of the held-out set")
    p.add_argument("--beams", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("release", help="write the student edition (no solutions)")
    p.add_argument("--source", default="notebooks", help="instructor notebooks")
    p.add_argument("--out", default="_build/student")
    p.add_argument("--no-html", action="store_true", help="skip the student HTML book")
    p.add_argument("--repository-url", default=None,
                   help="where the student edition is published (its book's launch buttons "
                        "point there; without it the book has none)")
    p.set_defaults(run=_release)

    p = sub.add_parser("autograder", help="build a Gradescope autograder bundle (zip)")
    p.add_argument("--out", default="_build/autograder.zip", help="the zip to write")
    p.add_argument("--reference", default="notebooks",
                   help="instructor notebooks, hidden tests included")
    p.set_defaults(run=_autograder)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
