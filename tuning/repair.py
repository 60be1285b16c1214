"""Before ``--resume`` of a killed search: give every unfinished trial the checkpoint that Ray
Tune's saved state names for it.

Ray saves the experiment state at most every ~10 s, but a trial deletes its previous checkpoint
(``num_to_keep=1``) as soon as it reports a new one; a driver killed in between leaves a state
naming a checkpoint that is gone, and Ray then fails that trial ("does not exist on storage
anymore"). The newer checkpoint is there and is what the trial should continue from, so it is
moved to the name the state expects, with a note of the last epoch the state recorded
(``RAY_SEEN_MARKER``): the trainable reports the epochs after it again (their results were lost
with the driver) before it trains on.
"""
from __future__ import annotations

import json
import re
import shutil

from layerout.files import atomic_write
from tuning import internals, storage

RAY_SEEN_MARKER = "ray_seen_epoch.json"  # in a repaired checkpoint: the last epoch Ray's state recorded


def repair_checkpoint_refs(exp_dir: str) -> list[str]:
    """Returns one line per repaired trial; does nothing for remote storage."""
    if not storage.is_local(exp_dir):
        return []
    base = storage.local_path(exp_dir)
    out: list[str] = []
    for trial in internals.saved_trial_states(str(base)):
        names = trial.checkpoint_names
        tdir = base / f"trial_{trial.trial_id}"
        if trial.status == "TERMINATED" or not names or not tdir.is_dir() or (tdir / names[-1]).exists():
            continue
        present = sorted(d.name for d in tdir.glob("checkpoint_*") if re.fullmatch(r"checkpoint_\d{6}", d.name))
        newer = [n for n in present if n > names[-1]]
        if newer:
            shutil.move(str(tdir / newer[-1]), str(tdir / names[-1]))
            atomic_write(tdir / names[-1] / RAY_SEEN_MARKER, json.dumps({"epoch": trial.last_result.get("epoch")}))
            out.append(f"trial {trial.trial_id}: continues from {newer[-1]} (the saved state named "
                       f"{names[-1]}, deleted after it)")
    return out
