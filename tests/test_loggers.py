"""The tools people already use on a search: Ray Tune's logger callbacks (``--logger``, a space's
``loggers:``), a user's own ``ray.tune.Callback`` (``run_search(callbacks=...)``), the README's
"Your usual tools on an experiment" code run as written on a real experiment, the status options,
and one line (exit 2, before Ray starts) for a logger whose package is missing."""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything starts Ray: loopback only

import ray  # noqa: E402
from ray import tune  # noqa: E402

import tune_main  # noqa: E402
from layerout.errors import UserError  # noqa: E402
from tuning import SearchOptions, loggers, run_search  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _space(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(f"""
name: tiny
model: digits_cnn
dataset: digits
train: {{epochs: 2, batch_size: 64, lr: 0.05, augment: false, device: cpu}}
families:
  prefix: {{k: [1, 2], start_epoch: [0, 1]}}
early_stopping: {{scheduler: none}}
reference_budgets: false
confirm: {{seeds: 0}}
num_samples: 2
max_concurrent: 1
seed: 0
{extra}
""")
    return p


class Epochs(tune.Callback):
    """A user's callback: counts the epochs reported (it runs in the driver)."""

    def __init__(self):
        self.results: list[tuple[str, int]] = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.append((trial.trial_id, int(result["epoch"])))


def _readme_tools_code() -> str:
    """The Python block of the README's "Your usual tools on an experiment" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your usual tools on an experiment", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_logger_csv_a_users_callback_and_the_readme_tools_on_a_real_search(tmp_path, monkeypatch, capsys):
    mine = Epochs()
    # tune_main imports run_search from tuning.search when a search starts
    monkeypatch.setattr("tuning.search.run_search", functools.partial(run_search, callbacks=[mine]))
    rc = tune_main.main(["--space", str(_space(tmp_path)), "--storage", str(tmp_path / "res"), "--name", "csv",
                         "--logger", "csv", "--no-analysis", "--progress-interval", "600"])
    assert rc == 0
    exp = tmp_path / "res" / "csv"
    trial_dirs = sorted(exp.glob("trial_*"))
    assert len(trial_dirs) == 2
    for d in trial_dirs:  # the CSV logger's files and result.json; not the TensorBoard logger's
        names = {p.name for p in d.iterdir()}
        assert {"progress.csv", "result.json", "params.json"} <= names, names
        assert not any(n.startswith("events.out.tfevents") for n in names), names
        epochs = [line.split(",")[0] for line in (d / "progress.csv").read_text().splitlines()]
        assert epochs[0] == "epoch" and epochs[1:] == ["1", "2"]
    meta = json.loads((exp / "experiment.json").read_text())
    assert meta["options"]["loggers"] == ["csv"]
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ  # set only while the search ran
    # the user's callback saw every epoch of every trial
    ids = {d.name.removeprefix("trial_") for d in trial_dirs}
    assert sorted(mine.results) == sorted((t, e) for t in ids for e in (1, 2))
    out = capsys.readouterr().out
    assert "  loggers: result.json, csv" in out
    # the search's last status line (off a terminal), after the per-trial lines
    status = [line for line in out.splitlines() if line.startswith("[search] ")]
    assert re.fullmatch(r"\[search\] 2/2 trials finished, 0 running, 0 queued(, \d+ repeated proposals? not trained)?; "
                        r"epochs 4/4 planned; \d+s elapsed, nothing left to train", status[-1]), status

    # the README's code as written, on this experiment: pandas, ExperimentAnalysis, ResultGrid, Tuner.restore
    code = _readme_tools_code().replace("results/demo-20261123-101500", str(exp))
    assert str(exp) in code
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    assert len(scope["exp"].trials) == 2 and len(scope["exp"].epochs) == 4
    assert sorted(scope["ea"].dataframe()["epoch"]) == [2, 2]
    assert len(scope["grid"]) == 2 and len(scope["tuner"].get_results()) == 2
    best = scope["grid"].get_best_result(metric="val_accuracy", mode="max", scope="last")
    assert best.metrics["val_accuracy"] == max(scope["exp"].trials["val_accuracy"])


def test_a_missing_logger_package_is_one_line_before_ray_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loggers, "installed", lambda package: package not in ("mlflow", "wandb"))
    res = tmp_path / "res"
    with pytest.raises(SystemExit) as exc:
        tune_main.cli(["--space", str(_space(tmp_path)), "--storage", str(res), "--logger", "csv",
                       "--logger", "mlflow"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: --logger mlflow: needs the mlflow package, which is not installed; install it "
                          "with pip install 'layerout-tune[mlflow]'")
    # a space's loggers: the file and key named
    space = _space(tmp_path, "loggers: [tensorboard, wandb]")
    with pytest.raises(SystemExit) as exc:
        tune_main.cli(["--space", str(space), "--storage", str(res)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {space}: loggers: wandb: needs the wandb package") and "[wandb]" in err
    assert not ray.is_initialized() and not res.exists()  # nothing started, nothing written
    # --logger replaces the space's loggers: without wandb, the search goes on (here to the next check)
    (res / "taken").mkdir(parents=True)
    with pytest.raises(UserError, match="already exists"):
        run_search(str(space), SearchOptions(loggers=["csv"], storage=str(res), name="taken"))
    with pytest.raises(UserError, match="^callbacks: must be a list of ray.tune.Callback objects, got <built-in"):
        run_search(str(space), SearchOptions(loggers=["csv"], storage=str(res)), callbacks=[print])
    assert not ray.is_initialized()


def test_bad_logger_and_progress_options_are_one_line(tmp_path, capsys):
    space = str(_space(tmp_path))
    for args, start in ((["--logger", "neptune"], "error: argument --logger: invalid choice: 'neptune'"),
                        (["--progress-interval", "-1"], "error: --progress-interval: must be a number of seconds >= 0"),
                        (["--progress-interval", "nan"], "error: --progress-interval: must be a number of seconds >= 0")):
        with pytest.raises(SystemExit) as exc:
            tune_main.cli(["--space", space, "--storage", str(tmp_path / "res"), *args])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(start), err
    bad = _space(tmp_path, "loggers: [csv, neptune]")
    with pytest.raises(SystemExit) as exc:
        tune_main.cli(["--space", str(bad), "--storage", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(f"error: {bad}: loggers: must be one of csv, tensorboard, mlflow, "
                                                  "wandb or a list of them")
    # --progress-interval is how the console looks: allowed with --resume (which checks the directory next)
    with pytest.raises(SystemExit) as exc:
        tune_main.cli(["--resume", str(tmp_path / "missing"), "--progress-interval", "10"])
    assert exc.value.code == 2 and "not an experiment directory" in capsys.readouterr().err


def test_the_logger_set_a_search_runs_with():
    assert loggers.resolved(None) == ["csv", "tensorboard"]  # Ray Tune's defaults (tensorboardX comes with ray[tune])
    assert loggers.resolved(["mlflow", "csv", "mlflow"]) == ["mlflow", "csv"]
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    made = loggers.logger_callbacks(["tensorboard"], "s")
    assert [type(c) for c in made] == [JsonLoggerCallback, TBXLoggerCallback]  # result.json always
    assert [type(c) for c in loggers.logger_callbacks([], "s")] == [JsonLoggerCallback]
    assert CSVLoggerCallback in [type(c) for c in loggers.logger_callbacks(["csv"], "s")]
