"""The project's own error type: anything the user can fix (bad path, malformed file, unknown name, bad
config) is raised as a :class:`CifarlabError`, which the CLI turns into one line and a non-zero exit."""


class CifarlabError(Exception):
    """A user-facing error whose message is complete on one line (library messages quoted inside it may
    span lines; they are folded here)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Diverged(CifarlabError):
    """The loss became NaN or infinite: this configuration cannot train (a sweep records it and goes on)."""


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after finishing its current step and saving ``last.pt``."""

    def __init__(self, signum: int, run_dir: str, step: int):
        super().__init__(f"interrupted by signal {signum} after step {step}")
        self.signum = signum
        self.run_dir = run_dir
        self.step = step


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name when it has none: how
    a library's error is quoted inside one of ours."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


# Names people bring from other tools (timm, Lightning, Keras, torchvision scripts) for cifarlab's config keys.
SYNONYMS = {"learning_rate": "lr", "learningrate": "lr", "wd": "weight_decay", "l2": "weight_decay",
            "decay": "weight_decay", "bs": "batch_size", "batch": "batch_size", "epoch": "epochs",
            "num_epochs": "epochs", "max_epochs": "epochs", "arch": "model", "model_name": "model",
            "opt": "optimizer", "optim": "optimizer", "sched": "schedule", "scheduler": "schedule",
            "lr_scheduler": "schedule", "smoothing": "label_smoothing", "amp": "precision", "dtype": "precision",
            "workers": "threads", "num_threads": "threads", "drop": "dropout", "drop_rate": "dropout",
            "dataset": "data", "data_dir": "data", "root": "data", "output": "out", "output_dir": "out",
            "warmup": "warmup_epochs", "patience": "early_stop_patience", "teacher_model": "teacher",
            "config": "recipe", "cfg": "recipe", "config_file": "recipe"}


def did_you_mean(name: str, choices, synonyms: dict[str, str] | None = None) -> str:
    """'; did you mean 'x'?' when `name` is close to one of `choices` (or a known synonym of one), else ''."""
    import difflib

    choices = list(choices)
    key = str(name).lower().replace("-", "_")
    hint = (synonyms or {}).get(key)
    if hint in choices:
        close = [hint]
    else:
        scored = sorted(((difflib.SequenceMatcher(None, key, c).ratio(), c) for c in choices), reverse=True)
        close = [c for r, c in scored[:3] if r >= 0.6 and r >= scored[0][0] - 0.1]
    if not close:
        return ""
    return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
