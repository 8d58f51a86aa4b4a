"""The run's clock: how far the schedule has got, from steps or, under a time budget, from wall time.

Without a budget the schedules see the step count. With ``time_budget`` they see the fraction of the budget
used, mapped onto the planned steps, so a run stops on time with its learning rate and weight-average ramp at
their ends. The budget covers the whole run: the setup before training (reading the data, building the model)
is taken off it, and part of it is kept back for the evaluation after the last epoch (and its test-time
augmentation), which grows with each epoch's measured evaluation. Setup and reserve together never take more
than half the budget.

In a distributed run every rank reads one clock: the largest elapsed time, agreed on at each step (the
slowest rank's), so the LR and the ramp stay identical across ranks.
"""

from __future__ import annotations

import time


class Clock:
    OVERHEAD_SHARE = 0.5  # setup and the evaluation's reserve never take more than this share of the budget

    def __init__(self, budget_minutes: float, total_steps: int, elapsed: float = 0.0, shared: bool = False,
                 setup: float = 0.0):
        self.budget_s = budget_minutes * 60  # 0 = no budget: progress is the step count
        self.total_steps = total_steps  # the planned steps the budget's fraction is mapped onto
        self.setup = setup  # seconds this process spent before training (data, model), taken off the budget
        self.reserve = 0.0  # seconds kept for the final evaluation
        self.start = time.perf_counter() - elapsed  # a resumed run's clock carries on from its saved time
        self.agreed: float | None = elapsed if shared else None  # distributed: the clock agreed at the last step

    def elapsed(self) -> float:
        """This process's seconds of training, across restarts."""
        return time.perf_counter() - self.start

    def train_budget(self) -> float:
        """Seconds training may take: the budget less the setup and the reserve for the final evaluation."""
        return self.budget_s - min(self.setup + self.reserve, self.budget_s * self.OVERHEAD_SHARE)

    def progress(self, step: float) -> float:
        """The step the schedules see for optimizer step `step`."""
        if not self.budget_s:
            return step
        used = self.agreed if self.agreed is not None else self.elapsed()
        return min(1.0, used / self.train_budget()) * self.total_steps

    def past_budget(self) -> bool:
        """This process's clock says the training time is spent (ranks agree on it through a collective)."""
        return bool(self.budget_s) and self.elapsed() >= self.train_budget()

    def keep_for_evaluation(self, eval_seconds: float, passes: int) -> None:
        """Keep back `passes` evaluations of `eval_seconds` for the end of the run (the largest seen so far)."""
        if self.budget_s:
            self.reserve = max(self.reserve, eval_seconds * passes)
