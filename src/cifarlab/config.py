"""Run configuration: one dataclass holds every knob of a training run.

Precedence is defaults < recipe file < keyword/CLI overrides. The resolved config is written into the run
directory as ``config.yaml``, and that file alone is a valid recipe that re-runs the same training.
Unknown keys and values of the wrong type are rejected with the key named.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import SYNONYMS, CifarlabError, did_you_mean


@dataclass
class Config:
    # --- what to train -----------------------------------------------------------------------------------
    model: str = "resnet18"  # registered model name (`cifarlab models` lists them)
    model_args: dict = field(default_factory=dict)  # extra keyword arguments for the model factory
    study: dict = field(default_factory=dict)  # the study a recipe reproduces, for `cifarlab compare-to-study`:
    #                 {id: "001", figure: 80.44 (percent), metric: "test top-1 after 30 epochs", note: "..."}
    params: str | int = ""  # parameter budget, e.g. 2M, 800k or 4903242: the model's widths scaled to the largest
    #                         net within it (fast and CIFAR ResNet families; "" or 0 = the factory's own widths)
    dropout: float = 0.0  # dropout probability before the classifier (0 = off)
    block_dropout: float = 0.0  # Dropout2d probability inside residual blocks (0 = off)
    teacher: str = ""  # knowledge distillation: a cifarlab checkpoint or .onnx whose softened outputs the model also
    #                    learns from ("" = none); the teacher sees each batch as augmented for the student
    distill_alpha: float = 0.5  # weight of the teacher's soft targets in the loss; 1 - alpha goes to the labels
    distill_temperature: float = 4.0  # softmax temperature of the soft targets (Hinton et al.; > 0)
    pretrained: str = ""  # weights to start from: a file (.pt/.pth/.safetensors), a URL, hf-hub:USER/NAME, or
    #                       "torchvision" (its published ImageNet weights);
    #                       a classifier of another size is replaced by a new one ("" = random init)
    freeze: str = "none"  # "backbone": only the classifier trains (until unfreeze_epoch); "none": everything trains
    unfreeze_epoch: int = 0  # with freeze: backbone, the epoch (counted from 0) from which all layers train; 0 = never

    # --- data ------------------------------------------------------------------------------------------
    data: str = ""  # dataset source: CIFAR directory, image folder or .tar.gz
    label_mode: str = "fine"  # CIFAR-100 only: "fine" (100 classes) or "coarse" (20 superclasses)
    val_split: float = 0.1  # held-out validation share of the training split (<1: fraction, >=1: count; 0 = none)
    split_seed: int = 0  # seed of the stratified train/val split (independent of `seed`)
    mean: Any = "auto"  # per-channel normalization mean in [0,1] units, or "auto" = training-split mean
    std: Any = "auto"  # per-channel normalization std in [0,1] units, or "auto" = training-split std
    augment: list = field(default_factory=list)  # ordered list of {name: ..., **options} batch augmentations
    resize: int = 0  # resize every image to this many pixels before normalizing (0 = keep 32; 224 for ImageNet nets)
    interpolation: str = "bilinear"  # resize filter: nearest, bilinear, bicubic, box, hamming, lanczos (as PIL's)
    resize_schedule: list = field(default_factory=list)  # progressive resizing: [[from_epoch, size], ...], e.g.
    #                                [[0, 24], [4, 32]] trains at 24 px for 4 epochs, then at full size (empty = off)

    # --- optimization ----------------------------------------------------------------------------------
    epochs: int = 30  # passes over the training split
    batch_size: int = 128  # training images per optimizer step
    eval_batch_size: int = 500  # images per forward pass when evaluating
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1  # peak learning rate (for `cyclic`, the cycle's upper bound)
    lr_reference_batch: int = 0  # if > 0, `lr` is for this batch size and scales linearly to the batch trained
    #                              on (`batch_size`, times `select_keep` with hard-example selection)
    momentum: float = 0.9  # SGD momentum (Adam's beta1 is `betas[0]`)
    nesterov: bool = False  # Nesterov momentum for SGD
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW moment decay rates
    weight_decay: float = 5e-4  # L2 penalty (SGD/Adam) or decoupled decay (AdamW), per step
    no_decay_bn_bias: bool = False  # exempt BatchNorm weights and all biases from weight decay
    label_smoothing: float = 0.0  # cross-entropy label smoothing in [0, 1)
    grad_clip: float = 0.0  # max global gradient L2 norm (0 = no clipping)
    bias_lr_scale: float = 1.0  # LR multiplier for biases and BN shifts (their weight decay is divided by it)
    muon_lr_ratio: float = 1.0  # optimizer muon: the conv filters' LR is lr * muon_lr_ratio
    muon_momentum: float = 0.6  # optimizer muon: Nesterov momentum of the Muon update
    muon_ns_steps: int = 5  # optimizer muon: Newton-Schulz iterations per update (airbench94_muon uses 3)
    muon_ns_precision: str = "fp32"  # optimizer muon: fp32 | bf16 arithmetic of the Newton-Schulz iteration
    muon_batched: bool = False  # optimizer muon: orthogonalize all filters of one shape in one batched call
    #                            (13% slower than one by one on a 2-core CPU: BENCHMARKS.md)
    ema_decay: float = 0.0  # per-step decay of a weight average that is evaluated and saved (0 = off)
    ema_every: int = 5  # steps between weight-average updates
    lookahead: bool = False  # after each average update, reset the live weights to the average
    ema_ramp: float = 0.0  # the average's keep factor grows as (training progress) ** ema_ramp (0 = constant)
    stem_bias_epochs: float = 0.0  # fast nets: freeze the whitening stem's bias after this many epochs (0 = never)
    select_keep: float = 1.0  # hard-example selection: the model trains on this share of each batch, the images a
    #                           small proxy net finds hardest (highest loss); 1 = every image (off)
    select_proxy_widths: list = field(default_factory=lambda: [32, 64, 64])  # the proxy: a fast net of these widths
    select_proxy_every: int = 4  # the proxy takes an SGD step on the selected images every this many steps

    # --- learning-rate schedule (pure functions of the step, see training/schedules.py) ---------------------
    schedule: str = "cosine"  # constant | multistep | exponential | cosine | cyclic | onecycle | triangle | plateau
    schedule_interval: str = "step"  # "step": LR changes every step; "epoch": held constant within an epoch
    warmup_epochs: float = 0.0  # linear warm-up length in epochs (cosine, constant, multistep, exponential)
    min_lr: float = 0.0  # floor of cosine annealing, in LR units
    milestones: list = field(default_factory=list)  # multistep: epochs at which LR is multiplied by `gamma`
    gamma: float = 0.1  # multistep factor; exponential: per-epoch factor; cyclic exp_range: per-step factor
    cyclic_mode: str = "triangular"  # cyclic: triangular | triangular2 | exp_range
    cyclic_base_lr: float = 1e-6  # cyclic: lower bound of the cycle
    cyclic_step_size: int = 2000  # cyclic: steps in each half cycle
    onecycle_pct_start: float = 0.3  # onecycle: fraction of training spent rising
    onecycle_div_factor: float = 25.0  # onecycle: start LR = lr / div_factor
    onecycle_final_div_factor: float = 1e4  # onecycle: final LR = start LR / final_div_factor
    final_lr_frac: float = 0.0  # triangle: LR rises linearly from lr/onecycle_div_factor to lr at
    #                             onecycle_pct_start, then falls linearly to lr * final_lr_frac
    plateau_metric: str = "val_top1"  # plateau: metric watched (val_top1, val_loss, ...)
    plateau_factor: float = 0.1  # plateau: LR multiplier on a plateau
    plateau_patience: int = 10  # plateau: epochs without improvement before reducing
    plateau_cooldown: int = 0  # plateau: epochs to wait after a reduction before counting again
    plateau_threshold: float = 1e-4  # plateau: relative improvement that counts as better

    # --- run control -----------------------------------------------------------------------------------
    seed: int = 0  # seed of weights init, data order and augmentation
    deterministic: bool = False  # force deterministic kernels (slower; bit-reproducible on one machine)
    best_metric: str = "val_top1"  # metric that selects best.pt (val_top1/2/3 maximized, val_loss minimized)
    early_stop_patience: int = 0  # stop after this many epochs without a new best (0 = never)
    checkpoint_every: int = 0  # also write last.pt every this many optimizer steps within an epoch (0 = epoch ends)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    channels_last: bool = False  # NHWC memory format (faster for convs on GPUs and on CPUs with oneDNN)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 (autocast; fast on CPUs with avx512_bf16)
    out: str = ""  # run directory ("" = runs/<recipe>-<timestamp>)
    recipe: str = ""  # name of the recipe this config came from (informational)
    progress: bool = True  # show a progress bar
    tta: str = "none"  # test-time augmentation for the final evaluation: none | flip | flip_translate
    tta_margin: float = 0.0  # selective TTA: only images whose top-1 probability beats the runner-up's by less
    #                          than this get the TTA views, the others keep their plain prediction (0 = all images)
    val_every: int = 1  # epochs between validation passes; the last epoch is always validated (0 = only the last)
    time_budget: float = 0.0  # minutes for the run (data, training, final evaluation): schedules follow elapsed
    #                           time and the run ends on time (0 = off)
    tensorboard: bool = False  # also log scalars and the hparams view for TensorBoard into RUN_DIR/tensorboard
    csv_log: bool = False  # also log params and metrics as Lightning's CSVLogger does, into RUN_DIR/csv/version_0
    mlflow: str = ""  # also log to MLflow at this tracking URI (e.g. file:./mlruns or http://host:5000; "" = off)
    wandb: str = ""  # also log to this Weights & Biases project ("" = off; WANDB_MODE=offline works offline)
    compile: bool = False  # torch.compile the model (the first step compiles for about a minute on CPU)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over all ranks (CUDA only; per-rank otherwise)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
# Keys a resumed run may change: how long it runs and what it reports, never what it computes.
RESUMABLE = ("epochs", "time_budget", "progress", "threads", "checkpoint_every", "device", "tensorboard", "csv_log",
             "mlflow", "wandb", "out", "early_stop_patience", "val_every", "tta", "tta_margin")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")  # PIL's resize filters
PRECISIONS = ("auto", "fp32", "bf16")  # `precision`; also eval/predict's --precision
# The largest size images are resized to (px): 32-px CIFAR images gain nothing beyond it, and a batch at 6,000 px
# would need gigabytes per image before any check could say so.
MAX_RESIZE = 1024
MAX_THREADS = 1024  # CPU threads: above any machine's cores; a million crash torch


def _type_of(name: str) -> Any:
    hints = typing.get_type_hints(Config)
    return hints[name]


def _coerce(name: str, value: Any) -> Any:
    """Check `value` against the declared type of field `name`, converting the safe cases (int -> float)."""
    typ = _type_of(name)
    if typ is Any or isinstance(typ, types.UnionType):
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; Python reads it as a number
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif typ is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    elif typ is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    elif typ is dict:
        if isinstance(value, dict):
            return dict(value)
    raise CifarlabError(f"config key '{name}' expects {typ.__name__}, got {value!r}")


# Plain vocabularies. Those with an implementation table (optimizer, schedule, tta, best_metric, plateau_metric)
# are checked against that table (cifarlab.training.setup.VOCABULARIES).
_CHOICES = {
    "precision": PRECISIONS,
    "muon_ns_precision": ("fp32", "bf16"),
    "schedule_interval": ("step", "epoch"),
    "cyclic_mode": ("triangular", "triangular2", "exp_range"),
    "label_mode": ("fine", "coarse"),
    "freeze": ("none", "backbone"),
    "interpolation": INTERPOLATIONS,
}


# The range of every numeric key: (low, high, low included, high included). Every float must also be finite, so
# nan and inf never reach a run (a nan LR would train until it diverged; an infinite time budget never ends).
_INF = float("inf")
_AT_LEAST_0 = (0, _INF, True, False)
_POSITIVE = (0, _INF, False, False)
_UNIT = (0, 1, True, False)  # [0, 1)
_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    **dict.fromkeys(("dropout", "block_dropout", "label_smoothing", "momentum", "muon_momentum", "ema_decay"), _UNIT),
    **dict.fromkeys(("lr", "weight_decay", "grad_clip", "min_lr", "warmup_epochs", "ema_ramp", "stem_bias_epochs",
                     "final_lr_frac", "plateau_threshold", "cyclic_base_lr", "val_split"), _AT_LEAST_0),
    "time_budget": (0, 525_600, True, True),  # minutes: up to a year (1e308 would make the clock's seconds inf)
    **dict.fromkeys(("bias_lr_scale", "muon_lr_ratio", "gamma", "onecycle_div_factor", "onecycle_final_div_factor"),
                    _POSITIVE),
    "plateau_factor": (0, 1, False, True),
    "tta_margin": (0, 1, True, True),
    "select_keep": (0, 1, False, True),
    "distill_alpha": (0, 1, True, True),
    "distill_temperature": _POSITIVE,
    "onecycle_pct_start": (0, 1, False, False),
    **dict.fromkeys(("epochs", "batch_size", "eval_batch_size", "ema_every", "cyclic_step_size", "muon_ns_steps",
                     "select_proxy_every"), (1, _INF, True, False)),
    **dict.fromkeys(("lr_reference_batch", "plateau_patience", "plateau_cooldown", "early_stop_patience",
                     "checkpoint_every", "unfreeze_epoch", "val_every"), _AT_LEAST_0),
    "threads": (0, MAX_THREADS, True, True),  # a million OpenMP threads crash torch (a segfault, not an error)
    "resize": (0, MAX_RESIZE, True, True),
}


def _in_range(key: str, value: float) -> bool:
    low, high, low_in, high_in = _BOUNDS[key]
    return (low < value or (low_in and value == low)) and (value < high or (high_in and value == high))


def _check_range(key: str, value: float) -> None:
    low, high, low_in, high_in = _BOUNDS[key]
    if not _in_range(key, value):
        if high == _INF:
            span = f"{'>=' if low_in else '>'} {low}"
        else:
            span = f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"
        raise CifarlabError(f"config key '{key}' must be {span}; got {value}")


def _numbers(key: str, value: Any, count: int | None = None, alternative: str = "") -> list[float]:
    """A list of finite numbers (of length `count`), or a one-line error naming the key (and the `alternative`
    value it may take instead)."""
    ok = isinstance(value, (list, tuple)) and (count is None or len(value) == count) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok:
        size = f"{count} " if count else ""
        raise CifarlabError(f"config key '{key}' must be {alternative}a list of {size}finite numbers; got {value!r}")
    return [float(v) for v in value]


def validate(cfg: Config) -> Config:
    """Reject values no run could use, naming the key: vocabularies, finite numbers, ranges, list shapes."""
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise CifarlabError(f"config key '{key}' must be one of {', '.join(choices)}; got {getattr(cfg, key)!r}")
    for key, f in FIELDS.items():
        value = getattr(cfg, key)
        if f.type == "float" and not math.isfinite(value):
            raise CifarlabError(f"config key '{key}' must be a finite number; got {value}")
        if key in _BOUNDS:
            _check_range(key, value)
    if cfg.val_split >= 1 and (not float(cfg.val_split).is_integer() or cfg.val_split < 2):
        raise CifarlabError(f"config key 'val_split' is a fraction below 1 or a whole number of images (>= 2); "
                            f"got {cfg.val_split}")
    if cfg.pretrained in (None, "none"):  # `--pretrained none` starts a pretrained recipe from random weights
        cfg.pretrained = ""
    if 0 < cfg.resize < 8:
        raise CifarlabError(f"config key 'resize' must be 0 (keep the images' size) or >= 8; got {cfg.resize}")
    for key in ("mean", "std"):
        value = getattr(cfg, key)
        if value != "auto":
            values = _numbers(key, value, 3, alternative="'auto' or ")
            if key == "std" and min(values) <= 0:
                raise CifarlabError(f"config key 'std' must be positive; got {value}")
    for i, beta in enumerate(_numbers("betas", cfg.betas, 2)):
        if not 0 <= beta < 1:
            raise CifarlabError(f"config key 'betas' item {i} must be in [0, 1); got {beta}")
    if any(m < 0 for m in _numbers("milestones", cfg.milestones)):
        raise CifarlabError(f"config key 'milestones' must be epochs >= 0; got {cfg.milestones}")
    for i, item in enumerate(cfg.resize_schedule):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in item)
                and item[0] >= 0 and 8 <= item[1] <= MAX_RESIZE and float(item[1]).is_integer()):
            raise CifarlabError(f"config key 'resize_schedule' item {i} must be [from_epoch >= 0, size in [8, "
                                f"{MAX_RESIZE}]]; "
                                f"got {item!r}")
    widths = cfg.select_proxy_widths
    if not (isinstance(widths, (list, tuple)) and len(widths) == 3
            and all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 4096 for w in widths)):
        raise CifarlabError("config key 'select_proxy_widths' must be three whole numbers in [1, 4096]; "
                            f"got {widths!r}")
    for i, aug in enumerate(cfg.augment):
        if not isinstance(aug, dict) or "name" not in aug:
            raise CifarlabError(f"config key 'augment' item {i} must be a mapping with a 'name'; got {aug!r}")
    if not isinstance(cfg.model_args, dict) or not all(isinstance(k, str) for k in cfg.model_args):
        raise CifarlabError(f"config key 'model_args' must be a mapping of option names; got {cfg.model_args!r}")
    if not isinstance(cfg.study, dict) or not set(cfg.study) <= {"id", "figure", "metric", "note"} or not (
            "figure" not in cfg.study or (isinstance(cfg.study["figure"], (int, float))
                                          and not isinstance(cfg.study["figure"], bool)
                                          and 0 <= cfg.study["figure"] <= 100)):
        raise CifarlabError("config key 'study' must be a mapping of id, figure (a percent), metric and note; "
                            f"got {cfg.study!r}")
    for key, budget in (("params", cfg.params), ("model_args.params", cfg.model_args.get("params", ""))):
        if budget not in ("", 0):
            from .models.summary import parse_budget  # torch, as check_vocabularies below

            try:
                parse_budget(budget)
            except CifarlabError as exc:
                raise CifarlabError(f"config key '{key}': {exc}") from None
    # Names with an implementation (optimizer, schedule, tta, metrics) are the keys of its table, read from there;
    # imported here, not at the top, so that reading a config needs no torch.
    from .training.setup import check_vocabularies

    check_vocabularies(cfg)
    return cfg


def check_keys(keys: Iterable[str]) -> None:
    """An unknown key (`--learning-rate`) is one line with a guess at the one meant."""
    for key in keys:
        key = key.replace("-", "_")
        if key not in FIELDS:
            raise CifarlabError(f"unknown config key '{key}'{did_you_mean(key, FIELDS, SYNONYMS)} "
                                "(cifarlab config lists every key)")


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy of `cfg` with `overrides` applied; unknown keys name the valid ones."""
    check_keys(overrides)
    values = dataclasses.asdict(cfg)
    for key, value in overrides.items():
        key = key.replace("-", "_")
        values[key] = _coerce(key, value)
    return Config(**values)


def recipe_dirs() -> list[Path]:
    """Where named recipes are looked up: the packaged copy, then the repository's `recipes/`."""
    dirs = []
    packaged = resources.files("cifarlab") / "recipes"
    if packaged.is_dir():
        dirs.append(Path(str(packaged)))
    repo = Path(__file__).resolve().parents[2] / "recipes"
    if repo.is_dir():
        dirs.append(repo)
    return dirs


def list_recipes() -> list[str]:
    names = set()
    for d in recipe_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_recipe(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise CifarlabError(f"recipe file not found: {name}")
        return path
    for d in recipe_dirs():
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = list_recipes()
    raise CifarlabError(f"unknown recipe '{name}'{did_you_mean(name, known)}; known recipes: {', '.join(known)}")


class _StrictLoader(yaml.SafeLoader):
    """YAML as config files need it: a key given twice is an error (PyYAML keeps the last silently), and anchors
    and aliases are refused (a self-referencing alias, or a billion-laughs blow-up, never reaches the config)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(None, None, "aliases (*name) are not allowed in cifarlab files",
                                       event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.MarkedYAMLError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: Path, what: str) -> Any:
    """A YAML file read strictly (UTF-8, no duplicate keys, no aliases); every problem is one line naming it."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise CifarlabError(f"{what} {path} could not be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CifarlabError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CifarlabError(f"{what} {path} is not valid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise CifarlabError(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise CifarlabError(f"{what} {path} nests too deeply to be a config") from None


def load_recipe(name: str) -> dict[str, Any]:
    path = find_recipe(name)
    values = load_yaml(path, "recipe")
    if values is None:
        raise CifarlabError(f"recipe {path} is empty; a recipe is a mapping of config keys (cifarlab recipes "
                            "lists the bundled ones)")
    if not isinstance(values, dict):
        raise CifarlabError(f"recipe {path} must be a mapping of config keys")
    values.setdefault("recipe", path.stem if path.stem != "config" else values.get("recipe", ""))
    return values


# The recipe a run with a time budget and neither a recipe nor a model takes, with the settings that did best for it
# under a budget (applied over the recipe; the user's own options still win). A budget means a different model on a
# laptop than on a GPU, so the crossovers are stated in epochs of fast94 at 32 px on the machine that runs
# (training.probe times a few of its steps): for budgets of up to the first figure's worth of such epochs, the first
# recipe, and so on. Measured on the development machine (2 cores, where such an epoch took about 100 s on the days
# of these runs, so fast94's planned run 17-23 minutes): at 10.7 minutes (6.4 epochs) fast94_select (hard-example
# selection) beat fast94 by 0.5 points with TTA, and at 14.4 minutes (8.6) the two were level (BENCHMARKS.md,
# "Fewer FLOPs per epoch"), so it takes the budgets up to 7 epochs; fast94 is measured at 10.7 and 21.3 minutes
# ("Budget curve"); fast95 needs about 4x fast94's time for its planned 23 epochs, so it takes the budgets from
# about 27 epochs (45 minutes there) on, where fast94's schedule would be stretched twofold (the crossover itself is
# not measured; at 36 epochs, 53 minutes there, fast95 reached 91.98% against fast94's 91.34% at 13, and fast94 with
# cutout given the same 53 minutes 92.00% against fast95's 92.36% at 24 px first, seed 0 each). Under a budget
# fast95 trains the first 13/23 of its clock at 24 px: at 53 minutes that bought it 21 epochs instead of 15 and
# 92.36% instead of 91.98% (seed 0 each; seed 1, resized: 91.60%, so the gain is within the seed spread; at full
# length the same schedule costs 0.74x the time at -0.32 points). One or two seeds per point so far.
BUDGET_RECIPES: tuple[tuple[float, str, dict[str, Any]], ...] = (
    (7.0, "fast94_select", {}),
    (27.0, "fast94", {}),
    (math.inf, "fast95", {"resize_schedule": [[0, 24], [13, 32]]}),
)


def recipe_for_budget(minutes: float, epoch_seconds: float) -> tuple[str, dict[str, Any]]:
    """The recipe that did best in `minutes` on a machine that trains a fast94 epoch in `epoch_seconds`, and the
    settings it did best with there."""
    epochs = minutes * 60 / epoch_seconds
    name, settings = next((name, settings) for upto, name, settings in BUDGET_RECIPES if epochs <= upto)
    return name, copy.deepcopy(settings)


def make_config(recipe_name: str | None = None, /, **overrides: Any) -> Config:
    """defaults < recipe < overrides, validated. (`recipe_name` is positional: `recipe` is also a config key.)
    With a `time_budget`, no recipe and no `model`, the recipe is the one that does best in that budget on this
    machine (`BUDGET_RECIPES`, in epochs timed by `training.probe`)."""
    given, chosen = {k: v for k, v in overrides.items() if v is not None}, {}
    if not recipe_name and given.get("model") is None and given.get("recipe") is None and given.get("time_budget"):
        asked = validate(apply_overrides(Config(), given))  # an invalid budget or thread count is refused untimed
        if asked.time_budget > 0:
            from .training.probe import fast94_epoch_seconds

            epoch_s = fast94_epoch_seconds(asked.device, asked.threads)
            recipe_name, chosen = recipe_for_budget(asked.time_budget, epoch_s)
            logging.getLogger("cifarlab").info(
                "no recipe given: %s%s, the best measured for %g minutes on a machine that trains a fast94 epoch in "
                "%.3g s (%.3g of them)", recipe_name, "".join(f" {k}={v}" for k, v in chosen.items()),
                asked.time_budget, epoch_s, asked.time_budget * 60 / epoch_s)
    cfg = Config()
    if recipe_name:
        cfg = apply_overrides(cfg, load_recipe(recipe_name))
    cfg = apply_overrides(cfg, chosen)
    cfg = apply_overrides(cfg, given)
    return validate(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


@dataclass(frozen=True)
class KeyDoc:
    key: str
    default: Any
    section: str
    meaning: str  # the comment beside the field in this file: meaning, units, choices


def config_docs() -> list[KeyDoc]:
    """Every config key with its default, its section and the comment written beside it in ``Config`` (a comment
    continued on the following lines is joined), read from this file's source, so the docs cannot drift."""
    import io
    import tokenize

    source = Path(__file__).read_text(encoding="utf-8")
    body = source[source.index("class Config:"):source.index("\nFIELDS = ")]
    notes: dict[str, list[str]] = {}
    sections: dict[str, str] = {}
    section, last = "", None
    for tok in tokenize.generate_tokens(io.StringIO(body).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in FIELDS and last != tok.string:
            last = tok.string
            notes[last], sections[last] = [], section
        elif tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if text.startswith("---"):
                section, last = text.strip("- "), None
            elif last is not None:
                notes[last].append(text)
    defaults = dataclasses.asdict(Config())
    return [KeyDoc(k, defaults[k], sections.get(k, ""), " ".join(notes.get(k, []))) for k in FIELDS]
