"""The private Ray Tune state the tool reads (tuning/internals.py), checked against the installed Ray
on a real experiment: a tiny Tune run with checkpoints, whose saved state we then read."""
from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything starts Ray: loopback only

import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import ray  # noqa: E402
from ray import cloudpickle, tune  # noqa: E402

from tuning import internals  # noqa: E402
from tuning.schedulers import PaperASHA  # noqa: E402
from tuning.search import _init_ray  # noqa: E402


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test file


def _reports_three_epochs(config):
    for epoch in range(1, 4):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.txt").write_text(str(epoch))
            tune.report({"epoch": epoch, "score": config["x"] * epoch}, checkpoint=tune.Checkpoint.from_directory(d))


def test_the_installed_ray_is_the_one_the_internals_were_checked_with():
    assert ray.__version__ == internals.CHECKED_WITH["ray"], (
        f"tuning/internals.py reads private Ray state checked with Ray {internals.CHECKED_WITH['ray']}; "
        f"Ray {ray.__version__} is installed: re-check each function there (this file's tests) and update "
        "CHECKED_WITH")


def test_saved_trial_states_and_checkpoint_names_of_a_real_run(tmp_path):
    _init_ray(None)
    try:
        tuner = tune.Tuner(_reports_three_epochs, param_space={"x": tune.grid_search([1, 2])},
                           run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0,
                                                     checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        results = tuner.fit()
    finally:
        ray.shutdown()
    exp = str(tmp_path / "exp")
    states = internals.saved_trial_states(exp)
    assert {s.trial_id for s in states} == {r.metrics["trial_id"] for r in results}
    for s in states:
        assert s.status == "TERMINATED" and s.last_result.get("epoch") == 3
        trial_dir = next(Path(exp).glob(f"*{s.trial_id}*"))
        on_disk = sorted(d.name for d in trial_dir.glob("checkpoint_*"))
        assert s.checkpoint_names == on_disk == ["checkpoint_000002"]  # num_to_keep=1: the third report's


def test_asha_fields():
    sched = PaperASHA(time_attr="epoch", metric="val_accuracy", mode="max", max_t=8, grace_period=2)
    assert internals.asha_settings(sched) == ("epoch", 8)
    before = sched._num_stopped
    internals.uncount_asha_stop(sched)
    assert sched._num_stopped == before - 1


def _reports_x(config):
    tune.report({"epoch": 1, "score": config["x"]})


def test_tuner_searcher_and_scheduler_new_and_restored(tmp_path):
    import optuna
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="score", mode="max",
                            sampler=optuna.samplers.RandomSampler(seed=0))
    scheduler = FIFOScheduler()
    _init_ray(None)
    try:
        tuner = tune.Tuner(_reports_x, tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                                                   num_samples=2, max_concurrent_trials=1),
                           run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0))
        # the objects passed in, also once Ray has wrapped the searcher in its ConcurrencyLimiter
        tuner.fit()
        assert internals.tuner_searcher(tuner) is searcher and internals.tuner_scheduler(tuner) is scheduler
        restored = tune.Tuner.restore(str(tmp_path / "exp"), trainable=_reports_x)
        restored.fit()
        again = internals.tuner_searcher(restored)
        # after a restore: the unpickled copies, the searcher with the saved study
        assert again is not searcher and isinstance(again, OptunaSearch)
        assert isinstance(internals.tuner_scheduler(restored), FIFOScheduler)
        assert len(again._ot_study.trials) == 2
    finally:
        ray.shutdown()
