"""The ``cifarlab`` command: subcommands that parse arguments and call the library, nothing more."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from typing import Any

import yaml

from ._version import __version__
from .config import INTERPOLATIONS, MAX_RESIZE, PRECISIONS
from .errors import CifarlabError, Interrupted, did_you_mean

log = logging.getLogger("cifarlab")


def _parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` pairs; values are read as YAML (numbers, lists, booleans)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise CifarlabError(f"unexpected argument '{tok}'; config keys are given as --key value")
        key, eq, value = tok[2:].partition("=")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value = tokens[i + 1]
                i += 1
            else:
                value = "true"
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if parsed is None:  # `--lr=` or `--lr null` would otherwise keep the default without a word
            raise CifarlabError(f"--{key} needs a value (got {value!r})")
        out[key.replace("-", "_")] = parsed
        i += 1
    return out


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from .api import train
    from .config import check_keys

    overrides = _parse_overrides(extra)
    for key in ("epochs", "seed", "out", "val_split"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.print_config:
        from pathlib import Path

        from .config import make_config, to_yaml

        recipe = str(Path(args.resume) / "config.yaml") if args.resume else args.recipe
        print(to_yaml(make_config(recipe, data=args.data, **overrides)), end="")
        return 0
    if args.resume:
        train(args.recipe, resume=args.resume, data=args.data, report=not args.no_report, **overrides)
        return 0
    check_keys(overrides)  # a mistyped key (--config for --recipe) is named before anything else is asked for
    if not args.recipe and not overrides.get("model") and not overrides.get("time_budget"):
        raise CifarlabError("give --recipe NAME (cifarlab recipes lists them), --model NAME, or --time-budget "
                            "MINUTES alone for the best recipe measured for that budget")
    train(args.recipe, data=args.data, report=not args.no_report, **overrides)
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from .evaluation import evaluate
    from .evaluation.evaluate import format_report

    m = evaluate(args.checkpoint, args.data, split=args.split, out=args.out, batch_size=args.batch_size,
                 device=args.device, tta=args.tta, tta_margin=args.tta_margin, model=args.model, mean=args.mean,
                 std=args.std, precision=args.precision)
    print(format_report(m))
    return 0


def cmd_predict(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from .data.formats import IMAGE_SUFFIXES
    from .evaluation import predict

    images_only = all(Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file() for p in args.input)
    out = args.out if args.out is not None else (None if images_only else "submission.csv")
    res = predict(args.checkpoint, args.input, out, tta=args.tta, tta_margin=args.tta_margin,
                  label_names=args.label_names,
                  topk=args.topk or 1, force=args.force, batch_size=args.batch_size, device=args.device,
                  model=args.model, mean=args.mean, std=args.std, precision=args.precision)
    if images_only or args.topk:
        for ident, top in zip(res["ids"], res["topk"], strict=True):
            print(f"{ident}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    if res["out"]:
        print(f"wrote {len(res['ids'])} predictions to {res['out']}")
    return 0


def cmd_models(args: argparse.Namespace, extra: list[str]) -> int:
    from .models import create_model, list_models, summarize
    from .models.summary import uninitialized

    print(f"{'model':<22} {'parameters':>12} {'MACs/image':>15}")
    for name in list_models():
        with uninitialized():  # counts and shapes are all this needs
            net = create_model(name, num_classes=args.num_classes or None)
        s = summarize(net)
        print(f"{name:<22} {s.total_params:>12,} {s.macs:>15,}")
    return 0


def cmd_summary(args: argparse.Namespace, extra: list[str]) -> int:
    from .models import create_model, parse_budget, summarize

    budget = parse_budget(args.budget) if args.budget else None  # a bad budget is refused before the table
    s = summarize(create_model(args.model, num_classes=args.num_classes or None))
    print(s.table())
    if budget is not None:
        if s.total_params > budget:
            print(f"OVER BUDGET: {s.total_params:,} parameters > {budget:,}", file=sys.stderr)
            return 1
        print(f"within budget: {s.total_params:,} <= {budget:,} parameters")
    return 0


def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    import time

    from .evaluation import write_comparison, write_run_report

    if len(args.runs) == 1 and not args.out:
        print(f"wrote {write_run_report(args.runs[0])}")
        return 0
    out = args.out or f"comparison-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"wrote {write_comparison(args.runs, out)}")
    return 0


def cmd_recipes(args: argparse.Namespace, extra: list[str]) -> int:
    from .config import find_recipe, list_recipes

    for name in list_recipes():
        first = find_recipe(name).read_text().splitlines()[0].lstrip("# ").strip()
        print(f"{name:<20} {first}")
    return 0


def cmd_config(args: argparse.Namespace, extra: list[str]) -> int:
    import dataclasses

    from .config import FIELDS, config_docs, make_config

    docs = config_docs()
    values = dataclasses.asdict(make_config(args.recipe)) if args.recipe else {}
    if args.key:
        key = args.key.replace("-", "_")
        docs = [d for d in docs if d.key.startswith(key)]
        if not docs:
            from .errors import SYNONYMS

            raise CifarlabError(f"unknown config key '{args.key}'{did_you_mean(key, FIELDS, SYNONYMS)}")
    section = None
    for d in docs:
        if d.section != section and not args.key:
            section = d.section
            print(f"\n# {section}")
        value = values.get(d.key, d.default)
        shown = json.dumps(value) if not isinstance(value, str) else (repr(value) if value == "" else value)
        print(f"--{d.key.replace('_', '-')} (default {shown})\n    {d.meaning}")
    return 0


def cmd_completion(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        import shtab
    except ImportError:
        raise CifarlabError("shell completion needs the shtab package: pip install 'cifarlab[completion]'") from None
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def cmd_compare_to_study(args: argparse.Namespace, extra: list[str]) -> int:
    from .evaluation.study import compare_to_study, format_comparison

    rows = [compare_to_study(run) for run in args.runs]
    print(json.dumps(rows, indent=2) if args.json else "\n".join(format_comparison(r) for r in rows))
    return 0


def cmd_data_download(args: argparse.Namespace, extra: list[str]) -> int:
    from .data import download
    from .data.fetch import data_root

    print(f"ready: {download(args.name, args.to or data_root())}")
    return 0


def cmd_data_stats(args: argparse.Namespace, extra: list[str]) -> int:
    from .data import dataset_stats, load_cached, open_source

    source = open_source(args.path)
    data = load_cached(source, args.split, args.label_mode)
    st = dataset_stats(data.images, data.labels, data.classes, resize=args.resize, interpolation=args.interpolation)
    if args.json:
        print(json.dumps(st.__dict__, indent=2))
        return 0
    print(f"{source.kind} '{args.split}' split at {source.path}: {st.count} images "
          f"{tuple(data.images.shape[1:])}, {len(data.classes)} classes"
          + (f"; statistics after resizing to {args.resize} px ({args.interpolation})" if args.resize else ""))
    print("mean (R G B): " + " ".join(f"{v:.4f}" for v in st.mean))
    print("std  (R G B): " + " ".join(f"{v:.4f}" for v in st.std))
    print(f"grayscale images: {st.grayscale}")
    print("class counts: " + ", ".join(f"{k} {v}" for k, v in st.class_counts.items()))
    return 0


def cmd_sweep_run(args: argparse.Namespace, extra: list[str]) -> int:
    from .sweep import run_sweep, show_sweep

    try:
        study = run_sweep(args.file, trials=args.trials, storage=args.storage, out=args.out,
                          overrides=_parse_overrides(extra))
    except (Interrupted, KeyboardInterrupt) as exc:
        name = signal.Signals(exc.signum).name if isinstance(exc, Interrupted) else "SIGINT"
        print(f"cifarlab: {name}: sweep worker stopped; its unfinished trial is queued again "
              "(run the same command to go on)", file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)
    out = args.out or f"runs/sweeps/{study.study_name}"
    res = show_sweep(args.storage or out, study_name=study.study_name, out=out)
    print(res["table"])
    print(f"best recipe: {res['best_recipe']}; report: {res['page']}")
    return 0


def cmd_sweep_show(args: argparse.Namespace, extra: list[str]) -> int:
    from .sweep import show_sweep

    res = show_sweep(args.target, study_name=args.study, out=args.out)
    print(res["table"])
    if res["best_recipe"]:
        print(f"best recipe: {res['best_recipe']}")
    print(f"plots and report: {res['page']}")
    return 0


def cmd_import(args: argparse.Namespace, extra: list[str]) -> int:
    from .exporting import import_state_dict

    out = import_state_dict(args.weights, args.model, args.out, mean=args.mean, std=args.std, classes=args.classes,
                            resize=args.resize, interpolation=args.interpolation)
    print(f"wrote {out} (eval, predict and export take it)")
    return 0


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from .exporting import export

    print(f"wrote {export(args.checkpoint, args.format, args.out)}")
    return 0


def cmd_prune(args: argparse.Namespace, extra: list[str]) -> int:
    from .pruning import prune_checkpoint

    path, cut, recipe = prune_checkpoint(args.checkpoint, args.out, amount=args.amount, params=args.params,
                                         epochs=args.epochs, data=args.data, overrides=_parse_overrides(extra))
    kept = ", ".join(str(n) for n in cut.model_args["inner_widths"])
    print(f"wrote {path}: {cut.before:,} -> {cut.after:,} parameters ({cut.after / cut.before:.1%}); "
          f"filters kept inside the blocks: {kept}")
    if recipe is None:
        print(f"to fine-tune it: cifarlab train --recipe RECIPE --data DATA --pretrained {path} "
              f"--model-args '{{inner_widths: [{kept}]}}' (or prune with --epochs N)")
        return 0
    from .api import train

    train(str(recipe), report=not args.no_report, **_parse_overrides(extra))
    return 0


def cmd_push(args: argparse.Namespace, extra: list[str]) -> int:
    from .hub import push, write_hub_folder

    if args.dry_run:
        from pathlib import Path

        taken = [n for n in ("model.safetensors", "config.json", "README.md") if (Path(args.dry_run) / n).exists()]
        if taken:
            raise CifarlabError(f"{args.dry_run} already holds {', '.join(taken)}; give an empty or new folder")
        for path in write_hub_folder(args.run, args.dry_run):
            print(f"wrote {path}")
        return 0
    print(f"pushed to {push(args.run, args.repo, private=args.private)}")
    return 0


def _weights_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS,
                   help="compute in this precision instead of the one the run evaluated in (its config's); "
                        "fp32 gives a bf16 run the labels of its ONNX export")
    p.add_argument("--model", help="the checkpoint is a plain state dict of this registered model")
    p.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="with --model: normalization mean it was trained with ([0,1] units)")
    p.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="with --model: normalization std it was trained with ([0,1] units)")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown beside each option; the examples below a command keep their lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, "", []) or isinstance(action.default, bool):
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, ending a usage error with one line (the usage is one `--help` away) and a guess at a typo."""

    def __init__(self, *args, examples: str = "", **kwargs):
        if examples:
            kwargs["epilog"] = "examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines())
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        message = " ".join(message.split())
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            message += did_you_mean(wrong.group(1), re.findall(r"'([^']*)'", wrong.group(2)))
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(low: int, high: int | None = None):
    """An argparse type: a whole number >= low (and <= high)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value
    parse.__name__ = f"whole number >= {low}"
    return parse


def _path(text: str) -> str:
    """An argparse type: a path that is not empty (an unset shell variable gives "", which would mean the current
    folder or the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    return text


def _share(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:  # nan fails this too
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model from a recipe; any config key can be given as --key value",
                       description="Train a model from a recipe. Any config key (cifarlab config lists them all) "
                                   "can be given as --key value; values are read as YAML.",
                       examples="""
cifarlab train --recipe fast94 --data cifar10-train-jpg.tar.gz
cifarlab train --recipe seed001_small --data ./cifar-10-batches-py --epochs 5 --lr 0.05
cifarlab train --model resnet18 --params 2M --data ./cifar-10-batches-py --precision bf16
cifarlab train --recipe fast94 --print-config
cifarlab train --resume runs/fast94-20261203-101500""")
    t.add_argument("--recipe", help="recipe name (cifarlab recipes lists them) or YAML file; a run's config.yaml "
                                    "re-runs it")
    t.add_argument("--data", type=_path,
                   help="cifar10 or cifar100 (downloaded once into $CIFARLAB_DATA), or a CIFAR directory, image "
                        "folder or .tar.gz")
    t.add_argument("--epochs", type=_count(1), help="passes over the training split (default: the recipe's)")
    t.add_argument("--seed", type=int, help="seed of weights, data order and augmentation (default: the recipe's)")
    t.add_argument("--out", type=_path, help="run directory (default: runs/<recipe>-<time>)")
    t.add_argument("--val-split", dest="val_split", type=float,
                   help="validation share (<1) or count (>=1) of the training split; 0 = none")
    t.add_argument("--resume", type=_path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    t.add_argument("--no-report", action="store_true", help="skip the plots and report.html")
    t.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML and exit without reading data or training")
    t.set_defaults(func=cmd_train)


def _eval_parsers(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a checkpoint: loss, top-1/2/3, per-class, confusion matrix",
                       examples="""
cifarlab eval runs/fast94/best.pt
cifarlab eval runs/fast94/best.pt --data ./cifar-10-batches-py --split test --tta
cifarlab eval notebook_weights.pth --model resnet9 --mean 0.5 0.5 0.5 --std 0.5 0.5 0.5 --data ./cifar-10-batches-py""")
    e.add_argument("checkpoint", type=_path,
                   help="cifarlab checkpoint (.pt), run directory, exported .safetensors or .onnx, "
                        "hf-hub:USER/NAME, or a state dict with --model")
    e.add_argument("--data", type=_path,
                   help="dataset to evaluate on (default: the data the checkpoint was trained on)")
    e.add_argument("--split", choices=["val", "test", "train"],
                   help="split to evaluate (default: val if the run had one, else test)")
    e.add_argument("--out", type=_path, help="output directory (default: eval/ beside the checkpoint)")
    e.add_argument("--tta", nargs="?", const="flip", default="none", choices=["none", "flip", "flip_translate"],
                   help="test-time augmentation (--tta alone: flip)")
    e.add_argument("--tta-margin", type=float, default=0.0,
                   help="selective TTA: only images whose top-1 probability beats the runner-up's by less than "
                        "this get the TTA views (0 = all)")
    e.add_argument("--batch-size", type=_count(1), default=500, help="images per forward pass")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _weights_options(e)
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("predict", help="label images: print label and top-k, or write a Kaggle ID,Labels CSV",
                       examples="""
cifarlab predict runs/fast94/best.pt --input cat.png dog.jpg --topk 3    # prints each image's top 3
cifarlab predict runs/fast94/best.pt --input cifar_test_nolabels.pkl --out submission.csv
cifarlab predict model.onnx --input photos/ --label-names --out photos.csv --force""")
    r.add_argument("checkpoint", type=_path,
                   help="cifarlab checkpoint (.pt), run directory, exported .safetensors or .onnx, "
                        "hf-hub:USER/NAME, or a state dict with --model")
    r.add_argument("--input", type=_path,
                   nargs="+", required=True, help="unlabeled pickle, image folder or image files")
    r.add_argument("--out", type=_path,
                   help="CSV file to write (default: submission.csv, or none when the inputs are image "
                        "files: their labels are printed)")
    r.add_argument("--force", action="store_true", help="replace an existing --out file")
    r.add_argument("--topk", type=_count(1), help="print the K most probable classes of each input")
    r.add_argument("--tta", nargs="?", const="flip", default="none", choices=["none", "flip", "flip_translate"],
                   help="test-time augmentation (--tta alone: flip)")
    r.add_argument("--tta-margin", type=float, default=0.0,
                   help="selective TTA: only images whose top-1 probability beats the runner-up's by less than "
                        "this get the TTA views (0 = all)")
    r.add_argument("--label-names", action="store_true", help="write class names instead of indices")
    r.add_argument("--batch-size", type=_count(1), default=500, help="images per forward pass")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _weights_options(r)
    r.set_defaults(func=cmd_predict)


def _weights_parsers(sub) -> None:
    im = sub.add_parser("import", help="turn a plain state dict (a notebook's, kuangliu's, torchvision's) into a "
                                       "checkpoint",
                        examples="cifarlab import resnet9_notebook.pth --model resnet9 --mean 0.5 0.5 0.5 "
                                 "--std 0.5 0.5 0.5 --out resnet9.pt")
    im.add_argument("weights", type=_path, help="state dict file (.pth/.pt) or URL")
    im.add_argument("--model", required=True, help="registered model whose layout the weights have")
    im.add_argument("--out", type=_path, required=True, help="checkpoint to write")
    im.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                    help="normalization mean the weights were trained with ([0,1])")
    im.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                    help="normalization std the weights were trained with ([0,1])")
    im.add_argument("--classes", nargs="+", help="class names (default: CIFAR-10's for 10 outputs)")
    im.add_argument("--resize", type=_count(0, MAX_RESIZE), default=0,
                    help="input size the weights expect in px (0 = 32)")
    im.add_argument("--interpolation", default="bilinear", choices=INTERPOLATIONS, help="resize filter")
    im.set_defaults(func=cmd_import)

    ex = sub.add_parser("export", help="write a checkpoint as ONNX, a torch.export program, safetensors or a state "
                                       "dict",
                        examples="""
cifarlab export runs/fast94/best.pt --format onnx --out fast94.onnx
cifarlab export runs/fast94/best.pt --format safetensors --out fast94.safetensors
cifarlab export runs/fast94/best.pt --format pt2 --out fast94.pt2
cifarlab export runs/fast94/best.pt --format state_dict --out fast94_weights.pt""")
    ex.add_argument("checkpoint", type=_path, help="cifarlab checkpoint (.pt), run directory or hf-hub:USER/NAME")
    ex.add_argument("--format", required=True, metavar="{onnx,pt2,safetensors,state_dict}",
                    help="onnx (onnxruntime), pt2 (torch.export), safetensors (weights and cifarlab's metadata), "
                         "state_dict (torch.save of the weights)")
    ex.add_argument("--out", type=_path, required=True, help="file to write")
    ex.set_defaults(func=cmd_export)

    pr = sub.add_parser("prune", help="drop the weakest filters of a checkpoint's residual blocks (L1 norm), save "
                                      "the smaller net and fine-tune it",
                        description="Structured pruning (Li et al. 2017): in every residual block, the first conv's "
                                    "filters with the smallest L1 norm go, with their batch-norm channels and the "
                                    "second conv's matching inputs. The smaller net is written to OUT/pruned.pt; with "
                                    "--epochs N it is then fine-tuned in OUT with the run's own recipe (any config "
                                    "key as --key value).",
                        examples="""
cifarlab prune runs/resnet9/best.pt --amount 0.3 --out runs/resnet9-pruned --epochs 10 --lr 0.002
cifarlab prune runs/resnet9/best.pt --params 3M --out runs/resnet9-3M --epochs 10
cifarlab prune runs/resnet9/best.pt --amount 0.5 --out pruned/   # cut only, no fine-tuning""")
    pr.add_argument("checkpoint", type=_path, help="cifarlab checkpoint (.pt) or run directory")
    how = pr.add_mutually_exclusive_group(required=True)
    how.add_argument("--amount", type=_share, help="share of each block's filters to drop, in [0, 1)")
    how.add_argument("--params", help="drop as few filters as bring the net within this many parameters (3M, 800k)")
    pr.add_argument("--out", type=_path,
                    required=True, help="folder for pruned.pt and the fine-tuning run (new or empty)")
    pr.add_argument("--epochs", type=_count(0), default=0, help="epochs of fine-tuning (0 = only cut)")
    pr.add_argument("--data", type=_path, help="training data for the fine-tuning (default: the run's own)")
    pr.add_argument("--no-report", action="store_true", help="skip the fine-tuning run's plots and report.html")
    pr.set_defaults(func=cmd_prune)

    pu = sub.add_parser("push", help="upload a run's model to the Hugging Face Hub with a model card",
                        examples="""
cifarlab push runs/fast94-20261203-101500 --repo alice/cifar10-fast94
cifarlab push runs/fast94-20261203-101500 --repo alice/cifar10-fast94 --dry-run hub_files/""")
    pu.add_argument("run", type=_path, help="run directory (its best.pt) or checkpoint")
    pu.add_argument("--repo", required=True, help="Hub repository USER/NAME (created when absent)")
    pu.add_argument("--private", action="store_true", help="create the repository as private")
    pu.add_argument("--dry-run", type=_path,
                    metavar="DIR", help="write the files that would be uploaded into DIR and stop")
    pu.set_defaults(func=cmd_push)


def _inspect_parsers(sub) -> None:
    m = sub.add_parser("models", help="list registered models with parameters and MACs",
                       examples="cifarlab models --num-classes 100")
    m.add_argument("--num-classes", type=_count(1), help="classifier width (default: each model's own)")
    m.set_defaults(func=cmd_models)

    s = sub.add_parser("summary", help="layer table of a model (torchsummary format)",
                       examples="cifarlab summary resnet9 --budget 5M")
    s.add_argument("model", help="registered model name (cifarlab models lists them)")
    s.add_argument("--num-classes", type=_count(1), help="classifier width (default: the model's own)")
    s.add_argument("--budget", help="exit 1 when the model has more parameters, e.g. 5M")
    s.set_defaults(func=cmd_summary)

    rp = sub.add_parser("report", help="rebuild a run's report.html, or one page comparing runs",
                        examples="""
cifarlab report runs/small                       # rebuild runs/small/report.html from its records
cifarlab report runs/small runs/medium runs/large --out runs/compare""")
    rp.add_argument("runs", type=_path,
                    nargs="+", metavar="RUN_DIR", help="run directories (finished, interrupted or running)")
    rp.add_argument("--out", type=_path,
                    help="directory for the comparison page and its plots (default: one run: its own "
                         "report.html; several: ./comparison-<time>)")
    rp.set_defaults(func=cmd_report)

    rc = sub.add_parser("recipes", help="list the bundled recipes", examples="cifarlab recipes")
    rc.set_defaults(func=cmd_recipes)

    cf = sub.add_parser("config", help="every config key with its default and meaning (or one key's)",
                        examples="cifarlab config\ncifarlab config lr\ncifarlab config --recipe fast94")
    cf.add_argument("key", nargs="?", help="one key (a prefix lists the keys starting with it)")
    cf.add_argument("--recipe", help="show this recipe's values as the defaults")
    cf.set_defaults(func=cmd_config)

    cs = sub.add_parser("compare-to-study", help="a run beside the figure of the study its recipe reproduces",
                        examples="cifarlab compare-to-study runs/seed001_small-20261203-101500")
    cs.add_argument("runs", type=_path, nargs="+", help="run directories (finished, interrupted or running)")
    cs.add_argument("--json", action="store_true", help="print the comparison as JSON")
    cs.set_defaults(func=cmd_compare_to_study)

    co = sub.add_parser("completion", help="print a shell completion script (needs the shtab package)",
                        examples="""
cifarlab completion bash > ~/.local/share/bash-completion/completions/cifarlab
cifarlab completion zsh > ~/.zfunc/_cifarlab""")
    co.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="shell to complete in")
    co.set_defaults(func=cmd_completion)


def _sweep_parsers(sub) -> None:
    sw = sub.add_parser("sweep", help="hyper-parameter sweeps on Optuna (one machine or many workers)",
                        examples="cifarlab sweep run recipes/sweeps/seed002_grid.yaml\ncifarlab sweep show "
                                 "runs/sweeps/seed002_grid")
    swsub = sw.add_subparsers(dest="sweep_command", required=True, parser_class=_Parser, metavar="COMMAND")
    sr = swsub.add_parser("run", help="run (or join) the sweep in FILE; any config key as --key value applies to "
                                      "every trial",
                          examples="""
cifarlab sweep run recipes/sweeps/seed002_grid.yaml --trials 8 --epochs 3
cifarlab sweep run grid.yaml --storage postgresql+psycopg2://user:pw@host/db   # one per worker machine""")
    sr.add_argument("file", type=_path, help="sweep YAML file (see recipes/sweeps/)")
    sr.add_argument("--trials", type=_count(1), help="finished trials the study stops at (default: the file's)")
    sr.add_argument("--storage", help="database URL shared by workers, e.g. postgresql+psycopg2://user:pw@host/db "
                                      "(default: an SQLite file in the sweep directory)")
    sr.add_argument("--out", type=_path,
                    help="sweep directory: trial runs, study.db, report (default: runs/sweeps/<name>)")
    sr.set_defaults(func=cmd_sweep_run)
    sh = swsub.add_parser("show", help="rank a sweep's trials; write best.yaml, plots and report.html",
                          examples="cifarlab sweep show runs/sweeps/seed002_grid")
    sh.add_argument("target", type=_path, metavar="DIR|URL", help="sweep directory or storage URL")
    sh.add_argument("--study", help="study name (needed when the storage holds several)")
    sh.add_argument("--out", type=_path,
                    help="where to write best.yaml, plots and report.html (default: the sweep directory)")
    sh.set_defaults(func=cmd_sweep_show)


def _data_parsers(sub) -> None:
    d = sub.add_parser("data", help="download datasets and inspect them",
                       examples="cifarlab data download cifar10 --to ~/data\ncifarlab data stats ~/data")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser, metavar="COMMAND")
    dl = dsub.add_parser("download", help="fetch an official archive, check its MD5, extract it safely",
                         examples="cifarlab data download cifar100 --to ~/data")
    dl.add_argument("name", choices=["cifar10", "cifar10-binary", "cifar100"], help="dataset")
    dl.add_argument("--to", type=_path,
                    help="target directory (default: $CIFARLAB_DATA, else ~/.cache/cifarlab/data, where "
                         "--data cifar10 looks)")
    dl.set_defaults(func=cmd_data_download)
    ds = dsub.add_parser("stats", help="per-channel mean/std (float64), class counts, grayscale count",
                         examples="cifarlab data stats ./cifar-10-batches-py --json\n"
                                  "cifarlab data stats ./cifar-10-batches-py --resize 224 --interpolation bicubic")
    ds.add_argument("path", type=_path, help="CIFAR directory, image folder or .tar.gz")
    ds.add_argument("--split", default="train", help="split to measure")
    ds.add_argument("--label-mode", default="fine", choices=["fine", "coarse"], help="CIFAR-100 label set")
    ds.add_argument("--json", action="store_true", help="print the statistics as JSON")
    ds.add_argument("--resize", type=_count(0, MAX_RESIZE), default=0,
                    help="statistics of the images resized to this size in px (0 = as stored)")
    ds.add_argument("--interpolation", default="bilinear", choices=INTERPOLATIONS, help="resize filter")
    ds.set_defaults(func=cmd_data_stats)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cifarlab", description="Train, compare, tune and ship ResNet-family classifiers on CIFAR-10 "
                "and CIFAR-100.",
                examples="""
cifarlab recipes                                   # what can be trained
cifarlab train --recipe fast94 --data cifar10-train-jpg.tar.gz
cifarlab eval runs/fast94-*/best.pt --tta
cifarlab config lr                                 # what a config key means
cifarlab COMMAND --help                            # a command's options and examples""")
    p.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    _train_parser(sub)
    _eval_parsers(sub)
    _weights_parsers(sub)
    _inspect_parsers(sub)
    _sweep_parsers(sub)
    _data_parsers(sub)
    return p


class _ConsoleHandler(logging.StreamHandler):
    """Progress (below WARNING) to whatever sys.stdout is at the time, warnings and errors to sys.stderr: stderr
    holds only what went wrong, and main() may be called again after either stream was replaced."""

    @property
    def stream(self):
        return sys.stdout if self._record_level < logging.WARNING else sys.stderr

    @stream.setter
    def stream(self, value):
        pass

    def emit(self, record: logging.LogRecord) -> None:
        self._record_level = record.levelno
        super().emit(record)

    _record_level = logging.INFO


def _configure_logging(level: int) -> logging.Handler:
    """The `cifarlab` logger (every module of the library logs under it) to the console while the command runs;
    other libraries' loggers, and the root logger, are left as the user's program set them."""
    logger = logging.getLogger("cifarlab")
    logger.setLevel(level)
    handler = _ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return handler


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("train", "prune") and getattr(args, "sweep_command", None) != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = _configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args, extra)
    except CifarlabError as exc:
        print(f"cifarlab: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        name = signal.Signals(exc.signum).name
        print(f"cifarlab: {name}: stopped after step {exc.step}; {exc.run_dir}/last.pt holds everything "
              f"(continue with: cifarlab train --resume {exc.run_dir})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("cifarlab: interrupted; the last completed epoch's last.pt is kept "
              "(continue with: cifarlab train --resume RUN_DIR)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cifarlab ... | head` closed our output: nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a fault of cifarlab's own: one line, the traceback on request
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"cifarlab: internal error: {type(exc).__name__}: {first} (run again with --debug for the traceback; "
              "please report it)", file=sys.stderr)
        return 1
    finally:  # a program that calls main() gets its logging back as it was
        logging.getLogger("cifarlab").removeHandler(handler)


if __name__ == "__main__":
    raise SystemExit(main())
