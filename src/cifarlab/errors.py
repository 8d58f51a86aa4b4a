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
