"""Weights shared as files: safetensors (read and written here, with cifarlab's metadata) and the Hugging Face Hub
(``cifarlab push RUN --repo USER/NAME``; ``hf-hub:USER/NAME`` wherever a checkpoint or ``pretrained`` is accepted).

A Hub repository written by :func:`push` holds ``model.safetensors`` (the weights, with the model name, classes and
normalization in its metadata), ``config.json`` (the same metadata and the run's whole config) and ``README.md``
(a model card: the recipe, the run's figures, the normalization, how to load it). Loading goes through
``huggingface_hub.snapshot_download``, so the Hub's own cache, ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` work as
they do for every other library.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .config import INTERPOLATIONS
from .errors import CifarlabError, first_line

HUB_PREFIX = "hf-hub:"
WEIGHTS_NAME = "model.safetensors"
META_KEY = "cifarlab"  # the safetensors metadata entry holding the JSON below
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def is_hub(spec: Any) -> bool:
    return isinstance(spec, (str, Path)) and str(spec).startswith(HUB_PREFIX)


def parse_hub(spec: str) -> tuple[str, str | None]:
    """``hf-hub:USER/NAME[@REVISION]`` -> (repo id, revision)."""
    repo, _, revision = str(spec)[len(HUB_PREFIX):].partition("@")
    if not _REPO.match(repo):
        raise CifarlabError(f"'{spec}' is not a Hub model: write hf-hub:USER/NAME (optionally @REVISION)")
    return repo, revision or None


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise CifarlabError("the Hugging Face Hub needs huggingface_hub: pip install 'cifarlab[hub]'") from None
    return huggingface_hub


def hub_file(spec: str, filename: str = WEIGHTS_NAME) -> Path:
    """The local path of `filename` in the Hub repository `spec`: from the Hub's cache, downloaded into it when
    absent (never when ``HF_HUB_OFFLINE=1``)."""
    repo, revision = parse_hub(spec)
    hf = _hub()
    try:
        folder = Path(hf.snapshot_download(repo_id=repo, revision=revision, allow_patterns=[filename, "config.json"]))
    except Exception as exc:  # noqa: BLE001 - the Hub's errors: offline, not found, gated, no such revision
        first = first_line(exc)
        raise CifarlabError(f"cannot get {spec} from the Hub or its cache ({type(exc).__name__}: {first})") from None
    path = folder / filename
    if not path.is_file():
        raise CifarlabError(f"{spec} has no {filename} (a cifarlab model on the Hub is written by cifarlab push)")
    return path


# ---- safetensors ---------------------------------------------------------------------------------------------

def _safetensors():  # a dependency: only a broken install lacks it
    try:
        import safetensors.torch
    except ImportError:
        raise CifarlabError("safetensors files need the safetensors package: pip install safetensors") from None
    return safetensors


def model_meta(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a file needs besides its weights to be loaded and fed as the run fed it."""
    cfg = ckpt.get("config", {})
    return {"model": ckpt["model"], "model_args": ckpt.get("model_args", {}), "classes": ckpt.get("classes") or [],
            "mean": ckpt["mean"], "std": ckpt["std"], "input_size": int(cfg.get("resize") or 32),
            "interpolation": cfg.get("interpolation", "bilinear"), "precision": cfg.get("precision", "auto"),
            "cifarlab_version": ckpt.get("cifarlab_version"),
            "metrics": {k: v for k, v in (ckpt.get("metrics") or {}).items() if isinstance(v, (int, float))}}


def check_meta(path: str | Path, meta: Any) -> dict[str, Any]:
    """cifarlab's metadata of an exported file, checked like a recipe: each problem one line naming the key."""
    if not isinstance(meta, dict) or "mean" not in meta:
        raise CifarlabError(f"{path} was not exported by cifarlab (no normalization in its metadata)")
    for key in ("mean", "std"):
        value = meta.get(key)
        if not (isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise CifarlabError(f"{path}: metadata cifarlab.{key} must be 3 finite numbers; got {value!r}")
    if min(meta["std"]) <= 0:
        raise CifarlabError(f"{path}: metadata cifarlab.std must be positive; got {meta['std']}")
    classes = meta.get("classes", [])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CifarlabError(f"{path}: metadata cifarlab.classes must be a list of names; got {classes!r}")
    size = meta.get("input_size", 32)
    if not (isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 4096):
        raise CifarlabError(f"{path}: metadata cifarlab.input_size must be a whole number in [8, 4096]; got {size!r}")
    if meta.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise CifarlabError(f"{path}: metadata cifarlab.interpolation must be one of {', '.join(INTERPOLATIONS)}")
    if not isinstance(meta.get("model_args", {}), dict):
        raise CifarlabError(f"{path}: metadata cifarlab.model_args must be a mapping")
    if meta.get("precision", "fp32") not in ("auto", "fp32", "bf16"):
        raise CifarlabError(f"{path}: metadata cifarlab.precision must be auto, fp32 or bf16; "
                            f"got {meta['precision']!r}")
    return meta


def safetensors_bytes(ckpt: dict[str, Any]) -> bytes:
    """The checkpoint's evaluated weights as a safetensors file, cifarlab's metadata in its header."""
    st = _safetensors()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt["state_dict"].items()}
    return st.torch.save(tensors, metadata={"format": "pt", META_KEY: json.dumps(model_meta(ckpt))})


def read_safetensors(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(state dict, cifarlab metadata or None for a plain safetensors file) — the format holds tensors only, so
    nothing in the file can run."""
    st = _safetensors()
    try:
        with st.safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors for a truncated or foreign file
        first = first_line(exc)
        raise CifarlabError(f"{path} is not a loadable safetensors file ({first})") from None
    if META_KEY not in header:
        return state, None
    try:
        meta = json.loads(header[META_KEY])
    except ValueError:
        raise CifarlabError(f"{path}: metadata {META_KEY} is not valid JSON") from None
    return state, check_meta(path, meta)


def checkpoint_from_safetensors(path: str | Path) -> dict[str, Any]:
    from .training.checkpoint import build_checkpoint

    state, meta = read_safetensors(path)
    if meta is None:
        raise CifarlabError(f"{path} is a plain safetensors state dict without cifarlab's metadata: give --model "
                            "NAME and the --mean/--std it was trained with")
    if not isinstance(meta.get("model"), str):
        raise CifarlabError(f"{path}: metadata cifarlab.model must be a model name")
    size = meta.get("input_size", 32)
    # the precision the run evaluated in, so predictions match its checkpoint's (files from before it was kept: fp32)
    config = {"model": meta["model"], "precision": meta.get("precision", "fp32"), "resize": 0 if size == 32 else size,
              "interpolation": meta.get("interpolation", "bilinear"), "val_split": 0}
    classes = meta.get("classes") or [str(i) for i in range(_classifier_width(state))]
    return build_checkpoint(model=meta["model"], model_args=meta.get("model_args", {}), classes=classes,
                            mean=meta["mean"], std=meta["std"], state_dict=state, config=config,
                            metrics=meta.get("metrics", {}), epoch=0, step=0, imported_from=str(path))


def _classifier_width(state: dict[str, Any]) -> int:
    heads = [k for k, v in state.items() if k.endswith(".weight") and v.ndim == 2]
    return int(state[heads[-1]].shape[0]) if heads else 10


# ---- pushing a run ---------------------------------------------------------------------------------------------

def write_hub_folder(run: str | Path, out: str | Path) -> list[Path]:
    """The files :func:`push` uploads, written to `out`: model.safetensors, config.json and README.md."""
    import yaml

    from .files import atomic_write, make_dir, write_text
    from .training.checkpoint import load_checkpoint

    run = Path(run)
    ckpt = load_checkpoint(run)
    summary = _read_json((run if run.is_dir() else run.parent) / "summary.json")
    out = Path(out)
    make_dir(out)
    with atomic_write(out / WEIGHTS_NAME, "wb", what="hub folder") as fh:
        fh.write(safetensors_bytes(ckpt))
    meta = model_meta(ckpt)
    write_text(out / "config.json", json.dumps({**meta, "library_name": "cifarlab", "run_config": ckpt["config"]},
                                               indent=2, default=str) + "\n")
    write_text(out / "README.md", model_card(ckpt, summary, yaml.safe_dump(ckpt["config"], sort_keys=False)))
    return [out / WEIGHTS_NAME, out / "config.json", out / "README.md"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def model_card(ckpt: dict[str, Any], summary: dict[str, Any], config_yaml: str) -> str:
    """A Hub model card: front matter the Hub indexes, then what the model is, its figures and how to load it."""
    cfg = ckpt.get("config", {})
    params = summary.get("params")
    metrics = summary.get("best_epoch_metrics") or ckpt.get("metrics") or {}
    n_classes = len(ckpt.get("classes") or [])
    dataset = "cifar100" if n_classes in (20, 100) else "cifar10"
    rows = [(name, metrics[key]) for key, name in (("val_top1", "validation top-1"), ("val_top2", "validation top-2"),
                                                   ("val_top3", "validation top-3"), ("val_loss", "validation loss"),
                                                   ("train_top1", "training top-1")) if key in metrics]
    if summary.get("final_tta"):
        rows.append((f"validation top-1 with TTA ({summary.get('tta')})", summary["final_tta"].get("val_top1")))
    figures = "\n".join(f"| {name} | {_figure(name, v)} |" for name, v in rows) or "| (no figures recorded) | |"
    model_index = "".join(f"\n      - type: {key}\n        value: {metrics[key]}" for key in ("val_top1",)
                          if key in metrics)
    lines = [
        "---", "library_name: cifarlab", "tags: [image-classification, cifarlab, " + dataset + "]",
        f"datasets: [{dataset}]", "metrics: [accuracy]",
        "model-index:", f"  - name: {ckpt['model']}", "    results:", "      - task: {type: image-classification}",
        f"        dataset: {{name: {dataset}, type: {dataset}}}", "        metrics:" + (model_index or " []"),
        "---", "",
        f"# {ckpt['model']} trained with cifarlab" + (f" (recipe `{cfg.get('recipe')}`)" if cfg.get("recipe") else ""),
        "",
        (f"{params:,} parameters; " if isinstance(params, int) else "")
        + f"{summary.get('epochs_run', ckpt.get('epoch'))} epochs on {summary.get('device', 'n/a')}"
        + (f" in {summary['wall_seconds'] / 60:.1f} min" if summary.get("wall_seconds") else "") + ".",
        "", "## Figures", "", "| metric | value |", "|---|---|", figures, "",
        "Validation figures are on the split of the training data the run held out (`val_split` "
        f"{cfg.get('val_split')}, `split_seed` {cfg.get('split_seed')}), not on the test set.", "",
        "## Input", "",
        f"RGB images of {int(cfg.get('resize') or 32)} px ({cfg.get('interpolation', 'bilinear')} resize), scaled to "
        f"[0, 1], then normalized per channel with mean {ckpt['mean']} and std {ckpt['std']}.", "",
        f"Classes, in output order: {', '.join(ckpt.get('classes') or [])}.", "",
        "## Use", "", "```bash", "pip install 'cifarlab[hub]'",
        "cifarlab predict hf-hub:USER/NAME --input images/ --topk 3", "```", "", "```python", "import cifarlab",
        'net = cifarlab.load_model("hf-hub:USER/NAME")', "```", "",
        "## Training config", "", "```yaml", config_yaml.rstrip(), "```", "",
    ]
    return "\n".join(lines)


def _figure(name: str, value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:.4f}" if "loss" in name else f"{100 * value:.2f}%"


def push(run: str | Path, repo: str, *, private: bool = False, token: str | None = None,
         message: str = "Upload a cifarlab model", staging: str | Path | None = None) -> str:
    """Write the Hub folder of `run` and upload it to `repo` (created when absent); returns the repo's URL."""
    import tempfile

    if not _REPO.match(repo):
        raise CifarlabError(f"'{repo}' is not a Hub repository name: write USER/NAME")
    hf = _hub()
    with tempfile.TemporaryDirectory(prefix="cifarlab-hub-") as tmp:
        folder = Path(staging or tmp)
        write_hub_folder(run, folder)
        card = (folder / "README.md").read_text().replace("USER/NAME", repo)
        (folder / "README.md").write_text(card)
        api = hf.HfApi(token=token)
        try:
            url = api.create_repo(repo, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=message)
        except Exception as exc:  # noqa: BLE001 - network, authentication, permissions
            first = first_line(exc)
            raise CifarlabError(f"could not push to {repo} ({type(exc).__name__}: {first}); the files are written "
                                "by cifarlab push --dry-run DIR") from None
    return str(url)
