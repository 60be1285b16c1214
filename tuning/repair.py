"""Before ``--resume`` of a killed search: make every unfinished trial continue from the right
checkpoint and report what Ray never recorded.

Two things can be lost when the driver is killed (Ray saves its experiment state at most every
~10 s, and it writes the trials' ``result.json`` on the driver):

- a trial deletes its previous checkpoint (``num_to_keep=1``) as soon as it reports a new one, so
  the saved state may name a checkpoint that is gone, and Ray would fail that trial ("does not
  exist on storage anymore"). The newer checkpoint is there and is what the trial should continue
  from, so it is moved to the name the state expects;
- the epochs a trial reported after the last saved state are missing from ``result.json``.

So every unfinished trial's checkpoint gets a note of the last epoch Ray's state recorded
(``RAY_SEEN_MARKER``); the trainable reports the epochs after it again (from the checkpoint's
history) before it trains on, or, when it had finished all its epochs, instead of training.

A trial that started after the last saved state is unknown to the restored search (Ray proposes a
new trial in its place): the scratch folder its killed attempt left in its folder is removed,
since no later attempt of it will.
"""
from __future__ import annotations

import json
import re
import shutil

from layerout.files import atomic_write
from tuning import internals, storage

SCRATCH = "scratch"  # tuning.trainable's scratch folder in a trial's folder

RAY_SEEN_MARKER = "ray_seen_epoch.json"  # in a repaired checkpoint: the last epoch Ray's state recorded


def repair_checkpoint_refs(exp_dir: str) -> list[str]:
    """Returns one line per trial moved to a newer checkpoint; does nothing for remote storage."""
    if not storage.is_local(exp_dir):
        return []
    base = storage.local_path(exp_dir)
    out: list[str] = []
    saved = internals.saved_trial_states(str(base))
    known = {f"trial_{t.trial_id}" for t in saved}
    for scratch in sorted(base.glob(f"trial_*/{SCRATCH}")):
        if scratch.parent.name not in known and scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
            out.append(f"{scratch.parent.name}: started after Ray's last saved state, so the resumed search does "
                       f"not know it; its scratch folder is removed")
    for trial in saved:
        names = trial.checkpoint_names
        tdir = base / f"trial_{trial.trial_id}"
        if trial.status == "TERMINATED" or not names or not tdir.is_dir():
            continue
        expected = tdir / names[-1]
        if not expected.exists():
            present = sorted(d.name for d in tdir.glob("checkpoint_*") if re.fullmatch(r"checkpoint_\d{6}", d.name))
            newer = [n for n in present if n > names[-1]]
            if not newer:
                continue
            shutil.move(str(tdir / newer[-1]), str(expected))
            out.append(f"trial {trial.trial_id}: continues from {newer[-1]} (the saved state named "
                       f"{names[-1]}, deleted after it)")
        seen = trial.last_result.get("epoch")
        atomic_write(expected / RAY_SEEN_MARKER, json.dumps({"epoch": seen if isinstance(seen, int) else 0}))
    return out
