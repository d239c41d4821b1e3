"""The sweeper of perennial-run's multiruns: Hydra's basic sweeper (every combination of the
comma-separated values), made fit for sweeps that run for hours on a cluster.

- Every job's config is composed before the first job starts, so a bad value fails the sweep at
  once, naming the value and the accepted ones, rather than after the jobs before it have run.
- ``resume=true`` continues a sweep in its directory: finished jobs are skipped, untouched; the
  others continue from their last saved window. Without it, a directory that holds runs is refused.
- A line before the first batch and after each one shows the jobs done over the whole sweep and an
  estimate of the time left.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before they are in
# sys.modules, where dataclasses cannot resolve string annotations.
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.core.utils import JobReturn
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, InterpolationResolutionError
from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.table import Table

PROG = "perennial-run"
# Settings a resumed sweep may change: perennial-run leaves them out of the config a run must keep.
FREE_KEYS = frozenset({"resume", "progress", "logger"})

Status = Literal["new", "started", "finished"]


@dataclass
class PerennialSweeperConf:
    _target_: str = "hydra_plugins.perennial_sweeper.perennial_sweeper.PerennialSweeper"
    # Jobs handed to the launcher at once (null: all of them). With a parallel launcher
    # (hydra/launcher=local or slurm) it is how many jobs run at the same time.
    max_batch_size: int | None = None
    # What to sweep, as on the command line: {"strategy": "naive,replay"} (see conf/experiment/).
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="perennial", node=PerennialSweeperConf, provider="perennial"
)


class SweepError(ValueError):
    """Bad sweep input, found before any job started."""


@dataclass(frozen=True)
class Job:
    num: int
    overrides: list[str]
    dir: Path
    status: Status


class PerennialSweeper(BasicSweeper):
    """Hydra's basic sweeper that checks every job before it starts one, and resumes a sweep."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        with _user_errors():
            pin_sweep_dir(config)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        # One list of every job's overrides; batches are cut below, around the jobs already finished.
        (every,) = self.split_arguments(parser.parse_overrides([*self._parse_config(), *arguments]), None)
        with _user_errors():
            jobs = self.plan(every, parser)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        todo = [job for job in jobs if job.status != "finished"]
        progress = SweepProgress(len(jobs), finished=len(jobs) - len(todo), show=bool(self.config.progress))
        progress.show()
        # The basic launcher runs jobs one after another in this process anyway: handing them over
        # one at a time lets the progress line follow every job.
        size = 1 if isinstance(self.launcher, BasicLauncher) else self.max_batch_size or len(jobs)
        returns = []
        for batch in batches(todo, size):
            results = self.launcher.launch([job.overrides for job in batch], initial_job_idx=batch[0].num)
            for result in results:
                _ = result.return_value  # raises a failed job's error, as Hydra's basic sweeper does
            returns.append(results)
            progress.advance(len(batch))
        return returns

    def plan(self, every: list[list[str]], parser: OverridesParser) -> list[Job]:
        """Every job with its directory and how far it got; raises :class:`SweepError` on bad input."""
        assert self.config is not None
        configs = self.compose(every)
        if len(every) > 1 and self.config.registry_dir is not None:
            raise SweepError(
                f"registry_dir={self.config.registry_dir} would be shared by all {len(every)} jobs of the "
                "sweep; leave it null (each job keeps its registry in its own directory)"
            )
        jobs = []
        for num, (overrides, config) in enumerate(zip(every, configs, strict=True)):
            job_dir = self.job_dir(config, num)
            jobs.append(Job(num, list(overrides), job_dir, run_status(job_dir)))
        begun = [job for job in jobs if job.status != "new"]
        if begun and not _resuming(self.config.resume):
            raise SweepError(
                f"hydra.sweep.dir={self.config.hydra.sweep.dir} already holds runs (jobs "
                f"{_numbers(job.num for job in begun)}); pass resume=true to continue that sweep, "
                "or leave hydra.sweep.dir unset to start a new one"
            )
        for job in begun:
            self.check_same_job(job, parser)
        return jobs

    def compose(self, every: list[list[str]]) -> list[DictConfig]:
        """Every job's config, composed now rather than when its turn comes. Hydra's basic sweeper
        checks one batch at a time, so a bad value in the last batch fails after the others ran."""
        assert self.config is not None and self.hydra_context is not None
        configs, problems = [], {}
        for num, overrides in enumerate(every):
            try:
                configs.append(self.hydra_context.config_loader.load_sweep_config(self.config, overrides))
            except MissingConfigException as err:
                problems.setdefault(_missing_option(err), []).append(num)
            except ConfigCompositionException as err:
                problems.setdefault(_bad_override(err), []).append(num)
        if problems:
            lines = [
                f"  {problem} (job{'s' * (len(nums) > 1)} {_numbers(nums)})"
                for problem, nums in problems.items()
            ]
            raise SweepError("\n".join(["no job of the sweep was started:", *lines]))
        return configs

    @staticmethod
    def job_dir(config: DictConfig, num: int) -> Path:
        with open_dict(config):  # as the launcher will, so that hydra.sweep.subdir resolves the same
            config.hydra.job.num = num
        return Path(config.hydra.sweep.dir) / str(config.hydra.sweep.subdir)

    def check_same_job(self, job: Job, parser: OverridesParser) -> None:
        """A resumed sweep must give each job the overrides it ran with: jobs are matched to their
        directories by number, and a finished job is skipped without any other check."""
        assert self.config is not None
        if self.config.hydra.output_subdir is None:
            return
        saved_file = job.dir / str(self.config.hydra.output_subdir) / "overrides.yaml"
        if not saved_file.is_file():
            return
        saved = [str(o) for o in OmegaConf.load(saved_file)]
        if _essential(saved, parser) != _essential(job.overrides, parser):
            raise SweepError(
                f"job {job.num} in {job.dir} ran with [{' '.join(saved)}], but this sweep gives job "
                f"{job.num} [{' '.join(job.overrides)}]; resume with the same sweep values in the same "
                "order, or leave hydra.sweep.dir unset to start a new sweep"
            )


def pin_sweep_dir(config: DictConfig) -> None:
    """Resolve ``hydra.sweep.dir`` once and hand every job the result. A job composes its config again
    (on a SLURM node, after a requeue), where ``${now:}`` or resume=true's pick of the newest sweep
    could resolve differently, and where perennial-run's resolvers may not be registered."""
    try:
        sweep_dir = str(Path(config.hydra.sweep.dir).absolute())
    except InterpolationResolutionError as err:
        # OmegaConf chains the resolver's own error, e.g. that there is no sweep to resume, as context.
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, FileNotFoundError):
            cause = cause.__context__
        if cause is None:
            raise
        raise SweepError(str(cause)) from err
    pin = f"hydra.sweep.dir={QuotedString(text=sweep_dir, quote=Quote.single).with_quotes()}"
    with read_write(config.hydra):
        config.hydra.sweep.dir = sweep_dir
        kept = [o for o in config.hydra.overrides.hydra if not str(o).startswith("hydra.sweep.dir=")]
        config.hydra.overrides.hydra = [*kept, pin]


def run_status(job_dir: Path) -> Status:
    """``finished`` once the loop passed the stream's last window and the outputs were written
    (summary.json, which records the number of windows, is written after the loop's last window);
    ``started`` with a saved window to continue from; else ``new``."""
    # Imported here, not at the top: Hydra imports every plugin whenever any Hydra app starts.
    from perennial.loop import CHECKPOINT_KEY
    from perennial.registry import Registry

    if not (job_dir / "registry" / "index.sqlite").is_file():
        return "new"
    with Registry(job_dir / "registry", create=False) as registry:
        state = registry.get_state(CHECKPOINT_KEY)
    if state is None:
        return "new"
    summary = job_dir / "summary.json"
    if summary.is_file() and state["next_window"] >= json.loads(summary.read_text())["windows"]:
        return "finished"
    return "started"


def batches(jobs: list[Job], size: int) -> Iterator[list[Job]]:
    """``jobs`` in runs of consecutive numbers, at most ``size`` long. A launcher numbers the jobs of a
    batch on from the first, so a skipped job must end a batch for each job to keep its directory."""
    for _, run in itertools.groupby(enumerate(jobs), key=lambda pair: pair[1].num - pair[0]):
        members = [job for _, job in run]
        for start in range(0, len(members), size):
            yield members[start : start + size]


class SweepProgress:
    """Jobs done over the whole sweep and the time left, one line before the first batch and after
    each: a live bar would fight the one each job draws over its windows."""

    def __init__(self, total: int, finished: int, show: bool) -> None:
        self.total, self.finished, self.ran = total, finished, 0
        self.console = Console() if show else None
        self.start = time.monotonic()

    def advance(self, jobs: int) -> None:
        self.ran += jobs
        self.show()

    def show(self) -> None:
        if self.console is None:
            return
        done = self.finished + self.ran
        elapsed = time.monotonic() - self.start
        if done == self.total:
            timing = f"done in {_duration(elapsed)}"
        elif self.ran:
            left = elapsed / self.ran * (self.total - done)
            timing = f"{_duration(elapsed)} elapsed, about {_duration(left)} left"
        else:
            timing = "starting"
        if self.finished:
            timing += f" ({self.finished} finished earlier)"
        line = Table.grid(padding=(0, 1))
        line.add_row(
            f"[bold]sweep[/] {done}/{self.total} jobs", ProgressBar(self.total, done, width=20), timing
        )
        self.console.print(line)


@contextmanager
def _user_errors() -> Iterator[None]:
    """perennial-run's way with bad input: one line naming the problem, exit status 2."""
    from perennial.cli.common import user_errors  # here, not at the top: as in run_status

    with user_errors(PROG):
        yield


def _resuming(resume: object) -> bool:
    # As perennial-run reads it: false or null starts afresh, true or a path continues.
    return resume not in (False, None, "false", "False")


def _missing_option(err: MissingConfigException) -> str:
    if err.missing_cfg_file is None or not err.options:
        return str(err)
    group, _, name = err.missing_cfg_file.rpartition("/")
    return f"{group}={name}: no such {group} config; accepted: {', '.join(sorted(err.options))}"


def _bad_override(err: ConfigCompositionException) -> str:
    cause = err.__cause__
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and isinstance(cause.parent_node, DictConfig):
        accepted = sorted(str(k) for k in cause.parent_node if not str(k).startswith("_"))
        return f"{cause.full_key}: no such setting; accepted: {', '.join(accepted)}"
    return " ".join(str(err).split())


def _essential(overrides: list[str], parser: OverridesParser) -> list[str]:
    return sorted(
        o.input_line
        for o in parser.parse_overrides(overrides)
        if o.key_or_group not in FREE_KEYS and not o.key_or_group.startswith("logger.")
    )


def _numbers(nums: Iterable[int]) -> str:
    return ", ".join(str(n) for n in nums)


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
