"""Sweep files: a base recipe, a search space over config keys, the metric, sampler, pruner and budget.

```yaml
name: seed002_grid            # the study's name in its storage (default: the file's stem)
recipe: seed002_net           # every trial starts from this recipe ...
overrides: {epochs: 5}        # ... with these keys changed for all trials
metric: val_top1              # an epoch-row key; val_loss/train_loss are minimized, the rest maximized
trials: 36                    # finished trials the study stops at, shared by all workers (grid: its size)
timeout_minutes: 0            # a worker starts no new trial after this long (0 = no limit)
sampler: grid                 # grid | random | tpe, or {name: tpe, seed: 0, n_startup_trials: 5}
pruner: none                  # none | median | successive_halving | hyperband, or {name: median, n_warmup_steps: 2}
enqueue: [{lr: 0.01}]         # random/tpe: points to try first, in this order (a known good start)
space:
  optimizer: [sgd, adam, adamw]                       # a list is a categorical choice
  lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  batch_size: {type: int, low: 32, high: 256, step: 32}
  model_args.width: [32, 64]                          # a dotted key sets one entry of a dict-valued key
```
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, load_yaml, make_config, recipe_dirs
from ..errors import CifarlabError

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
METRICS = ("val_top1", "val_top2", "val_top3", "val_loss", "train_top1", "train_loss")
_KEYS = ("name", "recipe", "overrides", "metric", "direction", "trials", "timeout_minutes", "sampler", "pruner",
         "space", "enqueue", "heartbeat_seconds", "max_retry", "trial_reports")


@dataclass
class Param:
    key: str  # config key, or "dict_key.entry"
    kind: str  # categorical | int | float
    choices: list = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def labels(self) -> list:
        """What Optuna stores for each choice: scalars as they are, lists/dicts as their YAML text."""
        return [_label(c) for c in self.choices]

    def grid(self) -> list:
        if self.kind == "categorical":
            return self.labels()
        if self.kind == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise CifarlabError(f"sweep: the grid sampler needs a list of values for '{self.key}' "
                            f"(a {self.kind} range{' on a log scale' if self.log else ''} has no grid)")

    def admits(self, value: Any) -> bool:
        """Whether an enqueued value lies in this space (Optuna would otherwise try it, or fail on it)."""
        if self.kind == "categorical":
            return value in self.choices or value in self.labels()
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return False
        return self.low <= value <= self.high and (self.kind != "int" or float(value).is_integer())

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            label = trial.suggest_categorical(self.key, self.labels())
            return self.choices[self.labels().index(label)]
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)


def _label(choice: Any) -> Any:
    if choice is None or isinstance(choice, (bool, int, float, str)):
        return choice
    return yaml.safe_dump(choice, default_flow_style=True, sort_keys=False).strip()


@dataclass
class SweepSpec:
    name: str
    recipe: str
    space: dict[str, Param]
    overrides: dict[str, Any] = field(default_factory=dict)
    metric: str = "val_top1"
    direction: str = "maximize"
    trials: int = 20
    timeout_minutes: float = 0.0
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # points tried first (e.g. the recipe's own values)
    heartbeat_seconds: int = 60  # a worker silent for 2x this long has died; its trial is failed and re-queued
    max_retry: int = 2  # how often one trial is re-queued after its worker died
    trial_reports: bool = True  # each trial's plots and report.html (about 1.5 s a trial; off for very short ones)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["space"] = {k: _param_dict(p) for k, p in self.space.items()}
        return d

    def trial_config(self, params: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Config overrides of one trial: the sweep's, then the command line's, then the sampled values."""
        out = {**self.overrides, **(extra or {})}
        for key, value in params.items():
            if "." in key:
                top, sub = key.split(".", 1)
                out[top] = {**dict(out.get(top) or getattr(make_config(self.recipe), top) or {}), sub: value}
            else:
                out[key] = value
        return out


def _param_dict(p: Param) -> dict[str, Any]:
    if p.kind == "categorical":
        return {"type": "categorical", "choices": p.choices}
    d = {"type": p.kind, "low": p.low, "high": p.high}
    if p.step is not None:
        d["step"] = p.step
    if p.log:
        d["log"] = True
    return d


def _parse_param(key: str, raw: Any) -> Param:
    top = key.split(".", 1)[0]
    fields = {f.name: f for f in dataclasses.fields(Config)}
    if top not in fields:
        raise CifarlabError(f"sweep: '{key}' is not a config key; valid keys: {', '.join(sorted(fields))}")
    if "." in key and not isinstance(getattr(Config(), top), dict):
        raise CifarlabError(f"sweep: '{key}': only dict-valued keys (such as model_args) take dotted entries")
    if isinstance(raw, list):
        raw = {"type": "categorical", "choices": raw}
    if not isinstance(raw, dict) or "type" not in raw:
        raise CifarlabError(f"sweep: '{key}' needs a list of choices or {{type: int|float|categorical, ...}}")
    kind = raw["type"]
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise CifarlabError(f"sweep: '{key}' is categorical but has no 'choices' list")
        return Param(key, kind, choices=choices)
    if kind not in ("int", "float"):
        raise CifarlabError(f"sweep: '{key}' has type '{kind}'; use categorical, int or float")
    unknown = set(raw) - {"type", "low", "high", "step", "log"}
    if unknown or "low" not in raw or "high" not in raw:
        raise CifarlabError(f"sweep: '{key}' ({kind}) takes low, high and optional step, log"
                            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
    try:
        low, high = float(raw["low"]), float(raw["high"])
        step = None if raw.get("step") is None else float(raw["step"])
    except (TypeError, ValueError):
        raise CifarlabError(f"sweep: '{key}': low, high and step must be numbers") from None
    if not all(math.isfinite(v) for v in (low, high, step or 0.0)):
        raise CifarlabError(f"sweep: '{key}': low, high and step must be finite")
    if not low <= high or (raw.get("log") and low <= 0):
        raise CifarlabError(f"sweep: '{key}': need low <= high (and low > 0 on a log scale)")
    return Param(key, kind, low=low, high=high, step=step, log=bool(raw.get("log", False)))


def _named(value: Any, choices: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(value, (str, dict)) and value is not None:
        raise CifarlabError(f"sweep: {what} must be a name or {{name: ..., options}}; got {value!r}")
    spec = {"name": value} if isinstance(value, str) else dict(value or {"name": "none"})
    if spec.get("name") not in choices:
        raise CifarlabError(f"sweep: unknown {what} '{spec.get('name')}'; choose one of {', '.join(choices)}")
    return spec


def parse_sweep(raw: Any, name: str = "sweep") -> SweepSpec:
    if not isinstance(raw, dict):
        raise CifarlabError("sweep: the file must be a YAML mapping")
    unknown = set(raw) - set(_KEYS)
    if unknown:
        raise CifarlabError(f"sweep: unknown key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(_KEYS)}")
    if not raw.get("recipe"):
        raise CifarlabError("sweep: 'recipe' (the base recipe of every trial) is required")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise CifarlabError("sweep: 'space' must map config keys to their ranges or choices")
    overrides = dict(raw.get("overrides") or {})
    make_config(raw["recipe"], **overrides)  # the recipe exists and the overrides are valid keys
    metric = raw.get("metric", "val_top1")
    if metric not in METRICS:
        raise CifarlabError(f"sweep: metric '{metric}' is not one of {', '.join(METRICS)}")
    direction = raw.get("direction", "minimize" if metric.endswith("loss") else "maximize")
    if direction not in ("minimize", "maximize"):
        raise CifarlabError(f"sweep: direction must be minimize or maximize, not '{direction}'")
    spec = SweepSpec(
        name=str(raw.get("name") or name), recipe=str(raw["recipe"]), overrides=overrides,
        space={k: _parse_param(k, v) for k, v in space.items()}, metric=metric, direction=direction,
        timeout_minutes=_number(raw, "timeout_minutes", float, 0.0, 0),
        sampler=_named(raw.get("sampler", "tpe"), SAMPLERS, "sampler"),
        pruner=_named(raw.get("pruner", "none"), PRUNERS, "pruner"),
        heartbeat_seconds=_number(raw, "heartbeat_seconds", int, 60, 1), max_retry=_number(raw, "max_retry", int, 2, 0),
        enqueue=list(raw.get("enqueue") or []), trial_reports=raw.get("trial_reports", True))
    if not isinstance(spec.trial_reports, bool):
        raise CifarlabError(f"sweep: trial_reports must be true or false, not {spec.trial_reports!r}")
    for point in spec.enqueue:
        if not isinstance(point, dict) or set(point) - set(spec.space):
            raise CifarlabError(f"sweep: enqueue entries map searched keys to values; got {point!r}")
        for key, value in point.items():
            if not spec.space[key].admits(value):
                raise CifarlabError(f"sweep: enqueued {key}={value!r} is outside its space")
    if spec.enqueue and spec.sampler["name"] == "grid":
        raise CifarlabError("sweep: a grid runs every point anyway; enqueue is for the random and tpe samplers")
    if spec.sampler["name"] == "grid":
        size = grid_size(spec)
        spec.trials = min(_number(raw, "trials", int, size, 1), size)
    else:
        spec.trials = _number(raw, "trials", int, 20, 1)
    return spec


def _number(raw: dict[str, Any], key: str, kind: type, default: float, low: float) -> Any:
    """A numeric sweep key: of `kind`, finite, >= low; anything else is one line naming the key."""
    value = raw.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low
    if not ok or (kind is int and not float(value).is_integer()):
        what = "a whole number" if kind is int else "a number"
        raise CifarlabError(f"sweep: {key} must be {what} >= {low}; got {value!r}")
    return kind(value)


def grid_size(spec: SweepSpec) -> int:
    n = 1
    for p in spec.space.values():
        n *= len(p.grid())
    return n


def load_sweep(path: str | Path) -> SweepSpec:
    """A sweep file, or the name of a bundled one (recipes/sweeps/NAME.yaml)."""
    path = Path(path)
    if not path.is_file() and path.suffix not in (".yaml", ".yml"):
        bundled = [d / "sweeps" / f"{path}.yaml" for d in recipe_dirs() if (d / "sweeps" / f"{path}.yaml").is_file()]
        path = bundled[0] if bundled else path
    if not path.is_file():
        raise CifarlabError(f"sweep file {path} not found")
    return parse_sweep(load_yaml(path, "sweep file"), path.stem)
