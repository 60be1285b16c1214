"""The private Ray Tune state the tool reads (tuning/internals.py), checked against the installed Ray
on a real experiment: a tiny Tune run with checkpoints, whose saved state we then read."""
from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything starts Ray: loopback only

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import ray  # noqa: E402
from ray import cloudpickle, tune  # noqa: E402

from tuning import internals  # noqa: E402
from tuning.schedulers import PaperASHA  # noqa: E402
from tuning.cluster import init_ray  # noqa: E402


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test file


def _reports_three_epochs(config):
    for epoch in range(1, 4):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.txt").write_text(str(epoch))
            tune.report({"epoch": epoch, "score": config["x"] * epoch}, checkpoint=tune.Checkpoint.from_directory(d))


def _reports_its_folder(config):
    tune.report({"epoch": 1, "folder": str(internals.trial_folder())})


def test_trial_folder_is_the_trials_folder_in_the_experiment(tmp_path):
    init_ray(None)
    try:
        results = tune.Tuner(_reports_its_folder, param_space={"x": tune.grid_search([1, 2])},
                             run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0)).fit()
    finally:
        ray.shutdown()
    folders = sorted(r.metrics["folder"] for r in results)
    assert folders == sorted(str(r.path) for r in results)
    assert all(Path(f).parent == tmp_path / "exp" and Path(f).is_dir() for f in folders)


def test_the_installed_ray_is_the_one_the_internals_were_checked_with():
    assert ray.__version__ == internals.CHECKED_WITH["ray"], (
        f"tuning/internals.py reads private Ray state checked with Ray {internals.CHECKED_WITH['ray']}; "
        f"Ray {ray.__version__} is installed: re-check each function there (this file's tests) and update "
        "CHECKED_WITH")


def test_saved_trial_states_and_checkpoint_names_of_a_real_run(tmp_path):
    init_ray(None)
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
    # what --resume needs (and unpickles): the pickled Tuner and the saved experiment state
    assert internals.has_saved_state(exp)
    names = internals.restore_files(exp)
    assert "tuner.pkl" in names and any(n.startswith("experiment_state-") and n.endswith(".json") for n in names)
    assert set(names) <= {p.name for p in Path(exp).iterdir()}
    only_tuner = tmp_path / "only_tuner"
    only_tuner.mkdir()
    (only_tuner / "tuner.pkl").write_bytes((Path(exp) / "tuner.pkl").read_bytes())
    assert not internals.has_saved_state(str(only_tuner))  # killed before Ray's first save


def test_asha_fields():
    sched = PaperASHA(time_attr="epoch", metric="val_accuracy", mode="max", max_t=8, grace_period=2)
    assert internals.asha_settings(sched) == ("epoch", 8)
    before = sched._num_stopped
    internals.uncount_asha_stop(sched)
    assert sched._num_stopped == before - 1


def test_asha_rungs_survive_a_resume_through_the_scheduler_state():
    """ASHA's rungs (private in Ray) go into SchedulerState's saved state and back: a restored
    scheduler stops a poor result that a fresh one (empty rungs) would let continue."""
    import pickle
    from types import SimpleNamespace

    from tuning.schedulers import CONTINUE, STOP, SchedulerState

    def asha():
        return PaperASHA(time_attr="epoch", metric="val_accuracy", mode="max", max_t=8, grace_period=1,
                         reduction_factor=2)

    def report(sched, tid, acc):
        trial = SimpleNamespace(trial_id=tid, config={"family": "prefix"})
        sched.on_trial_add(None, trial)
        return sched.on_trial_result(None, trial, {"epoch": 1, "val_accuracy": acc})

    before = asha()
    for tid, acc in (("a", 0.9), ("b", 0.7), ("c", 0.8)):
        report(before, tid, acc)
    state = pickle.loads(pickle.dumps(SchedulerState(before).get_state()))  # as Ray saves it
    after = asha()
    SchedulerState(after).set_state(state)
    assert internals.asha_state(after) == internals.asha_state(before)
    assert {"a": 0.9, "b": 0.7, "c": 0.8}.items() <= dict(internals.asha_state(after)["brackets"][0][-1][1]).items()
    assert report(after, "d", 0.1) == STOP and report(asha(), "d", 0.1) == CONTINUE


def _reports_x(config):
    tune.report({"epoch": 1, "score": config["x"]})


class _Ends(tune.Callback):
    """Counts the experiments it saw end (the driver runs it)."""

    def __init__(self):
        self.ends = 0

    def on_experiment_end(self, trials, **info):
        self.ends += 1


class _Counts(tune.Stopper):
    def __init__(self):
        self.results = 0

    def __call__(self, trial_id, result):
        self.results += 1
        return False

    def stop_all(self):
        return False


def test_optuna_search_study_trials_and_completed():
    """What tuning.searcher reads of Ray's OptunaSearch: its study, the Optuna trial each Ray trial
    was asked as (until told), and the Ray trials it has told."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="score", mode="max",
                            sampler=optuna.samplers.RandomSampler(seed=0))
    config = searcher.suggest("t1")
    study, asked = internals.optuna_study(searcher), internals.optuna_trials(searcher)
    assert isinstance(study, optuna.Study) and set(asked) == {"t1"} and isinstance(asked["t1"], optuna.Trial)
    assert asked["t1"].params == config and study.trials[0].state == TrialState.RUNNING
    assert internals.completed_trials(searcher) == set()
    searcher.on_trial_complete("t1", {"score": 0.5, **config})
    assert "t1" in internals.completed_trials(searcher)
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].values == [0.5]
    searcher.on_trial_complete("t1", {"score": 0.9, **config})  # told once: the set is what OptunaSearch checks
    assert study.trials[0].values == [0.5]


def test_tuner_searcher_and_scheduler_new_and_restored(tmp_path):
    import optuna
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="score", mode="max",
                            sampler=optuna.samplers.RandomSampler(seed=0))
    scheduler = FIFOScheduler()
    init_ray(None)
    try:
        tuner = tune.Tuner(_reports_x, tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                                                   num_samples=2, max_concurrent_trials=1),
                           run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0,
                                                     callbacks=[ends := _Ends()], stop=(counts := _Counts())))
        # the objects passed in, also once Ray has wrapped the searcher in its ConcurrencyLimiter
        assert internals.tuner_callbacks(tuner)[0] is ends
        tuner.fit()
        assert internals.tuner_searcher(tuner) is searcher and internals.tuner_scheduler(tuner) is scheduler
        assert ends.ends == 1
        assert internals.tuner_stopper(tuner) is counts and counts.results >= 2  # the stopper that saw the results
        restored = tune.Tuner.restore(str(tmp_path / "exp"), trainable=_reports_x)
        # the callbacks unpickled from tuner.pkl; one added to the list runs too
        kept = [cb for cb in internals.tuner_callbacks(restored) if isinstance(cb, _Ends)]
        assert len(kept) == 1 and kept[0] is not ends
        internals.tuner_callbacks(restored).append(added := _Ends())
        restored.fit()
        assert kept[0].ends == 1 and added.ends == 1
        again = internals.tuner_searcher(restored)
        # after a restore: the unpickled copies, the searcher with the saved study
        assert again is not searcher and isinstance(again, OptunaSearch)
        assert isinstance(internals.tuner_scheduler(restored), FIFOScheduler)
        assert isinstance(internals.tuner_stopper(restored), _Counts) and internals.tuner_stopper(restored) is not counts
        assert len(internals.optuna_study(again).trials) == 2
    finally:
        ray.shutdown()


def test_driver_error_messages_reach_the_handler_not_the_console(capsys):
    from ray._private.utils import publish_error_to_driver

    got: list[str] = []
    init_ray(None)
    try:
        with internals.driver_error_messages(got.append):
            publish_error_to_driver("layerout_test", "a message for the driver",
                                    gcs_client=ray._private.worker.global_worker.gcs_client)
            for _ in range(200):  # the driver's listener thread delivers it
                if got:
                    break
                time.sleep(0.05)
    finally:
        ray.shutdown()
    assert got == ["a message for the driver"]
    assert "a message for the driver" not in capsys.readouterr().out


_ERRORS: list = []


class _RecordErrors(tune.Callback):
    def on_trial_recover(self, iteration, trials, trial, **info):
        _ERRORS.append(internals.last_trial_error(trial))


def _fails_once(config):
    if tune.get_checkpoint() is None and not Path(config["marker"]).exists():
        Path(config["marker"]).write_text("failed once")
        raise ValueError("first attempt fails")
    tune.report({"epoch": 1})


def test_last_trial_error_is_the_exception_of_the_failed_attempt(tmp_path):
    _ERRORS.clear()
    init_ray(None)
    try:
        tune.Tuner(_fails_once, param_space={"marker": str(tmp_path / "marker")},
                   run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0,
                                             failure_config=tune.FailureConfig(max_failures=1),
                                             callbacks=[_RecordErrors()])).fit()
    finally:
        ray.shutdown()
    assert len(_ERRORS) == 1 and isinstance(_ERRORS[0], ray.exceptions.RayTaskError)
    assert isinstance(_ERRORS[0].as_instanceof_cause(), ValueError) and "first attempt fails" in str(_ERRORS[0])


_SEEN: list = []


class _RecordPlaces(tune.Callback):
    """What the driver knows of a trial: its actor's node at each result, and at each failure the
    epoch of the checkpoint Ray Tune restarts it from."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        _SEEN.append(("result", trial.config["x"], internals.trial_node(trial), result["node"]))

    def on_trial_recover(self, iteration, trials, trial, **info):
        _SEEN.append(("recover", trial.config["x"], internals.checkpoint_epoch(trial)))


def _fails_after(config):
    """Reports ``x`` epochs with a checkpoint, fails once, then finishes from its checkpoint."""
    start = 0
    if tune.get_checkpoint() is not None:
        with tune.get_checkpoint().as_directory() as d:
            start = int(Path(d, "epoch.txt").read_text())
    node = ray.get_runtime_context().get_node_id()
    for epoch in range(start + 1, 4):
        if epoch == config["x"] + 1 and not Path(config["marker"]).exists():
            Path(config["marker"]).write_text("failed once")
            raise ValueError("the worker fails")
        with tempfile.TemporaryDirectory() as d:
            Path(d, "epoch.txt").write_text(str(epoch))
            tune.report({"epoch": epoch, "node": node}, checkpoint=tune.Checkpoint.from_directory(d))


def test_trial_node_and_checkpoint_epoch_in_the_driver(tmp_path):
    """The node a trial's actor runs on is the one the trial reports; a trial that failed after its
    second epoch restarts from the checkpoint of epoch 2, one that failed before any from none."""
    _SEEN.clear()
    init_ray(None)
    try:
        tune.Tuner(_fails_after, param_space={"x": tune.grid_search([0, 2]),
                                              "marker": tune.sample_from(lambda s: str(tmp_path / f"m{s.config.x}"))},
                   tune_config=tune.TuneConfig(max_concurrent_trials=1),
                   run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0,
                                             failure_config=tune.FailureConfig(max_failures=1),
                                             callbacks=[_RecordPlaces()])).fit()
    finally:
        ray.shutdown()
    results = [s for s in _SEEN if s[0] == "result"]
    assert len(results) == 6 and all(len(s[2]) == 56 and s[2] == s[3] for s in results), _SEEN
    assert sorted(s[1:] for s in _SEEN if s[0] == "recover") == [(0, None), (2, 2)]
class _SeesSigint(tune.Callback):
    """Records, in the driver, whether Ray Tune's SIGINT handler is installed while fit() runs."""

    def __init__(self):
        self.seen = []

    def on_step_begin(self, iteration, trials, **info):
        self.seen.append(internals.tune_run_catches_sigint())


def test_atomic_state_copies_replace_the_driver_sync_and_tune_run_catches_sigint(tmp_path):
    """While active, the copies of Ray's driver staging folder into a local experiment are ours
    (whole files renamed into place); Ray Tune's own SIGINT handler is recognised while fit() runs."""
    import ray.train._internal.storage as ray_storage
    from pyarrow.fs import LocalFileSystem

    from tuning.cluster import fit_signals
    from tuning.trust import private_files

    staging, dest = tmp_path / "staging", tmp_path / "exp"
    (staging / "trial_a").mkdir(parents=True)
    (staging / "trial_a" / "result.json").write_text('{"epoch": 1}\n')
    (staging / "experiment_state-x.json").write_text("{}")
    failed = []
    syncer = ray_storage._FilesystemSyncer(storage_filesystem=LocalFileSystem())
    original = ray_storage._upload_to_fs_path
    with internals.atomic_state_copies(failed.append):
        command, kwargs = syncer._sync_up_command(local_path=str(staging), uri=str(dest))
        assert command is ray_storage._upload_to_fs_path and command is not original
        command(**kwargs)
    assert ray_storage._upload_to_fs_path is original
    assert (dest / "trial_a" / "result.json").read_text() == '{"epoch": 1}\n'
    assert (dest / "experiment_state-x.json").read_text() == "{}" and failed == []
    assert sorted(p.name for p in dest.rglob("*")) == ["experiment_state-x.json", "result.json", "trial_a"]

    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # an earlier raw fit() may have left Ray's
    assert not internals.tune_run_catches_sigint()
    init_ray(None)
    try:
        with private_files():
            sees = _SeesSigint()
            tuner = tune.Tuner(_reports_x, param_space={"x": 1}, run_config=tune.RunConfig(
                name="exp", storage_path=str(tmp_path / "runs"), verbose=0, callbacks=[sees]))
            fit_signals(tuner)
    finally:
        ray.shutdown()
        after = signal.signal(signal.SIGINT, before)
    assert sees.seen and all(sees.seen)
    assert after is signal.default_int_handler  # Ray leaves its handler installed; fit_signals does not
