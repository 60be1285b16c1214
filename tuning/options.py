"""How a search runs (``tune_main.py``'s options), checked without Ray: the command line reports a
bad option at once, before torch or Ray is imported (``tuning.search`` runs the search)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from layerout.checks import check_name, short
from layerout.errors import UserError
from layerout.progress import check_interval
from search_spaces.schedulers import SCHEDULERS  # noqa: F401 - also this module's name
from tuning import loggers

SAMPLERS = ("tpe", "nsga2", "random")
# the longest --connect-timeout: a day (socket and thread timeouts overflow far beyond it)
MAX_CONNECT_TIMEOUT_S = 86400


@dataclass
class SearchOptions:
    """How to run a search (``tune_main.py``'s options). ``None`` means "the space's value"."""

    num_samples: int | None = None
    max_concurrent: int | None = None
    sampler: str = "tpe"
    scheduler: str | None = None
    seed: int | None = None
    optuna_storage: str | None = None  # a SQLAlchemy URL or a journal file, for optuna-dashboard
    address: str | None = None  # a Ray cluster; None starts a fresh local Ray on loopback
    storage: str = "./results"
    name: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    data_dir: str | None = None
    download: bool = True
    # seconds to wait for the cluster at ``address``: nothing listening there is an error at once; a
    # listener that does not answer as a Ray head ends the process with exit status 2 after this
    # long (ray.init cannot be interrupted once it waits inside Ray's client)
    connect_timeout: float = 30.0
    # seconds between status updates (a progress bar on a terminal, a status line otherwise); None: 5
    # on a terminal, 60 when stdout is a file or a pipe; 0: none. How the console looks, not what runs
    progress_interval: float | None = None
    # Ray Tune's loggers besides result.json (tuning.loggers): None = the space's, else csv and tensorboard
    loggers: list[str] | None = None
    # the confirmation tune_main runs at the end (analysis.confirm): fresh seeds (0: none) and front
    # policies; None = the space's ``confirm:`` (by default 3 seeds, the top 2)
    confirm_seeds: int | None = None
    confirm_top: int | None = None

    def check(self) -> None:
        """One UserError naming the option for the first bad value."""
        if self.num_samples is not None and self.num_samples < 1:
            raise UserError(f"--num-samples: must be >= 1, got {self.num_samples}")
        if self.max_concurrent is not None and self.max_concurrent < 0:
            raise UserError(f"--max-concurrent: must be >= 0, got {self.max_concurrent}")
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler: must be one of {', '.join(SAMPLERS)}, got {short(self.sampler)}")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise UserError(f"--scheduler: must be one of {', '.join(SCHEDULERS)}, got {short(self.scheduler)}")
        if not self.cpus_per_trial > 0 or not math.isfinite(self.cpus_per_trial):
            raise UserError(f"--cpus-per-trial: must be > 0, got {self.cpus_per_trial:g}")
        if self.gpus_per_trial < 0 or not math.isfinite(self.gpus_per_trial):
            raise UserError(f"--gpus-per-trial: must be >= 0, got {self.gpus_per_trial:g}")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise UserError(f"--gpus-per-trial: above 1 it must be a whole number, got {self.gpus_per_trial:g}")
        if not (isinstance(self.connect_timeout, (int, float)) and not isinstance(self.connect_timeout, bool)
                and 0 < self.connect_timeout <= MAX_CONNECT_TIMEOUT_S):
            raise UserError(f"--connect-timeout: must be a number of seconds within (0, {MAX_CONNECT_TIMEOUT_S}], "
                            f"got {short(self.connect_timeout)}")
        if self.max_failures < 0:
            raise UserError(f"--max-failures: must be >= 0, got {self.max_failures}")
        check_interval(self.progress_interval)
        if self.loggers is not None and (isinstance(self.loggers, str) or not isinstance(self.loggers, (list, tuple))):
            raise UserError(f"--logger: must be a list of {', '.join(loggers.LOGGERS)}, got {short(self.loggers)}")
        loggers.check_loggers(self.loggers)
        for flag, value, low in (("--confirm-seeds", self.confirm_seeds, 0), ("--confirm-top", self.confirm_top, 1)):
            if value is not None and not (isinstance(value, int) and low <= value <= 100):
                raise UserError(f"{flag}: must be an integer within [{low}, 100], got {short(value)}")
        if self.seed is not None and not 0 <= self.seed < 2**31:
            raise UserError(f"--seed: must be within [0, 2147483647], got {self.seed}")
        if self.name is not None:
            check_name(self.name, "--name")
