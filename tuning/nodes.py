"""Which node each trial runs on, which nodes die during a search, and one console line for each:
the node by address and short id, and what each of its trials does next.

A trial's node is known from its first result on (each result carries ``node_id``, reported by
``tuning.trainable``); before that, from the GCS's actor table (``internals.trial_node``), so a
trial lost before its first epoch is still placed. A node is seen dead in Ray's node table (15 to
40 s after its raylet died, often after a short search ended), in the cluster's message that it
was marked dead, or at once by its raylet's port refusing connections: the driver probes the
nodes when the cluster announces a raylet's death and when a trial on a node loses its worker.
A trial's worker process may outlive its raylet and keep training until Ray marks the node dead
(then it fails). So the node's line waits until every trial that ran there has failed, or for
``GROUP_S`` after Ray marked the node dead, at most ``SETTLE_S``: one line says what each trial
does next: restarts from epoch N (its last checkpoint), restarts from the start (no checkpoint
yet), or, when its worker process outlived the node, that it is still running (or finished) there.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ray
from ray.exceptions import LocalRayletDiedError, NodeDiedError, OwnerDiedError, RayActorError, WorkerCrashedError

from tuning import internals

RAY_LOG = "ray.log"  # in the experiment directory: Ray's warnings and errors during the search
NODE_ID = "node_id"  # reported by every trial (tuning.trainable): the Ray node it runs on
NODE_IP = "node_ip"  # Ray Tune's own field of every result: the address of the node it ran on
# errors that mean a trial's worker process, or the node it ran on, is gone (not the trial's code)
LOST_WORKER = (RayActorError, NodeDiedError, WorkerCrashedError, LocalRayletDiedError, OwnerDiedError)
POLL_S = 2.0  # how often the driver reads Ray's node table
GROUP_S = 3.0  # trials that lose their workers within this long share a line (also: after Ray marked a node dead)
SETTLE_S = 60.0  # a node seen dead: how long the trials that ran there may take to fail before its line
PROBE_S = 1.0  # the timeout of one probe of a raylet's port
RAYLET_DEATHS: list[float] = []  # when the cluster announced a raylet's death (tuning.progress.ray_log_to)
DEAD_NODES: set[str] = set()  # node ids the cluster announced as marked dead (tuning.progress.ray_log_to)


@dataclass
class _Lost:
    """A trial that lost its worker: when, on which node, and what it does next."""

    when: float
    node: str
    trial: Any
    next: str


@dataclass
class _Dead:
    """A node seen dead: since when, when Ray marked it dead (None: not yet, its raylet's port
    said it), and the trials that ran there at that moment."""

    since: float
    there: list = field(default_factory=list)
    marked: float | None = None
    reported: bool = False


def next_step(trial: Any, recovers: bool) -> str:
    """What a trial that lost its worker does next, from the checkpoint Ray restores it from."""
    if not recovers:
        return "is not restarted (no restarts left, --max-failures)"
    epoch = internals.checkpoint_epoch(trial)
    return f"restarts from epoch {epoch} (its last checkpoint)" if epoch else "restarts from the start (no checkpoint yet)"


class NodeWatch:
    """The nodes of a search's trials, fed the trials' results and lost workers by
    ``TrialProgress``; ``look`` at every step of the search prints the lines (through ``say``)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self._where: dict[str, str] = {}  # trial id -> the node its current worker runs on
        self._address: dict[str, str] = {}  # node id -> its address, as the trials reported it
        self._lost: list[_Lost] = []
        self._dead: dict[str, _Dead] = {}
        self._seen: set[str] = set()  # nodes seen alive in the node table
        self._polled = 0.0
        self._deaths_seen = 0  # RAYLET_DEATHS already probed for
        self._told: set[str] = set()  # nodes with a "lost a worker process" line
        self._ended: dict[str, float] = {}  # trial id -> when it finished

    def located(self, trial: Any, result: dict | None) -> None:
        """A result of ``trial``: the node it ran on."""
        node = str((result or {}).get(NODE_ID) or "")
        if node:
            self._where[trial.trial_id] = node
            if (result or {}).get(NODE_IP):
                self._address[node] = str(result[NODE_IP])

    def ended(self, trial: Any) -> None:
        """``trial`` finished (if its node died meanwhile, its worker process outlived the node)."""
        self._ended[trial.trial_id] = time.time()

    def lost(self, trial: Any, recovers: bool) -> None:
        """``trial`` lost its worker process (a lost-worker error); ``recovers``: Ray restarts it."""
        node = (self._where.pop(trial.trial_id, None) or internals.trial_node(trial)
                or str((trial.last_result or {}).get(NODE_ID) or ""))
        self._lost.append(_Lost(time.time(), node, trial, next_step(trial, recovers)))

    def look(self, trials: list, force: bool = False) -> None:
        """Place the running trials, see which nodes died, print the lines that are due (every one
        with ``force``, at the end of the search). Reads Ray's state at most every ``POLL_S``,
        at once when the cluster announced a raylet's death."""
        now = time.time()
        news = len(RAYLET_DEATHS) > self._deaths_seen
        if not (force or news) and now - self._polled < POLL_S:
            return
        self._polled = now
        for t in trials:  # placed by its actor before its first result (else by its last one)
            if t.status == "RUNNING" and t.trial_id not in self._where:
                node = internals.trial_node(t) or str((t.last_result or {}).get(NODE_ID) or "")
                if node:
                    self._where[t.trial_id] = node
        table = _nodes()
        alive = {n for n, info in table.items() if info.get("Alive")}
        self._seen |= alive
        # marked dead by Ray: a node this driver saw alive is gone from the table or not alive there
        # (an unreadable table says nothing), or the cluster said so
        marked = ({n for n in self._seen if n not in alive} if table else set()) | (DEAD_NODES & self._seen)
        suspects = set(alive) if news else set()  # a raylet died somewhere: probe every node
        died_at = RAYLET_DEATHS[-1] if news else now
        suspects |= {e.node for e in self._lost if e.node in alive}  # lost workers there: is it the node?
        self._deaths_seen = len(RAYLET_DEATHS)
        probed = {n for n in sorted(suspects - set(self._dead)) if _raylet_gone(table[n])}
        for node in sorted(marked | probed):
            d = self._dead.get(node)
            if d is None:  # its trials: running there, or finished there since it died
                there = [t for t in trials if self._where.get(t.trial_id) == node and (
                    t.status == "RUNNING" or t.status == "TERMINATED" and self._ended.get(t.trial_id, now) >= died_at)]
                d = self._dead[node] = _Dead(now, there)
            if node in marked and d.marked is None:
                d.marked = now
        self._report(table, now, force)

    def _report(self, table: dict[str, dict], now: float, force: bool) -> None:
        for node, d in self._dead.items():
            lost = [e for e in self._lost if e.node == node]
            if not d.reported:
                failed = {e.trial.trial_id for e in lost}
                # still there (a trial restarted elsewhere reports from its new node)
                stayed = [t for t in d.there if t.trial_id not in failed and self._where.get(t.trial_id) == node]
                waiting = [t for t in stayed if t.status == "RUNNING"]
                settled = d.marked is not None and now - d.marked >= GROUP_S or now - d.since >= SETTLE_S
                if waiting and not force and not settled:
                    continue
                parts = [(e.trial.trial_id, e.next) for e in lost]
                parts += [(t.trial_id, _outlived(t)) for t in stayed if t.status in ("RUNNING", "TERMINATED")]
                d.reported = True
            elif lost and (force or now - lost[0].when >= GROUP_S):  # failed after the node's line
                parts = [(e.trial.trial_id, e.next) for e in lost]
            else:
                continue
            self._lost = [e for e in self._lost if e.node != node]
            self.say(self._line(node, table.get(node, {}), "died", parts, [e.trial for e in lost] + d.there))
        # lost workers on nodes that stayed up
        ready = [e for e in self._lost if e.node not in self._dead and (force or now - e.when >= GROUP_S)]
        self._lost = [e for e in self._lost if e not in ready]
        by_node: dict[str, list[_Lost]] = {}
        for e in ready:
            by_node.setdefault(e.node, []).append(e)
        for node, lost in by_node.items():
            self._told.add(node)
            self.say(self._line(node, table.get(node, {}), "lost a worker process",
                                [(e.trial.trial_id, e.next) for e in lost], [e.trial for e in lost]))

    def _line(self, node: str, info: dict, state: str, parts: list[tuple[str, str]], trials: list) -> str:
        """``node 10.0.0.5 (3f9a12cd) died: trial a1b2c3d4 restarts from epoch 12 (its last
        checkpoint); details in DIR/ray.log``."""
        address = info.get("NodeManagerAddress") or self._address.get(node) or "?"
        name = f"node {address} ({node[:8]})" if node else "a node"
        if not parts:
            return f"{name} {state}; " + ("the trials above that lost their workers ran there" if node in self._told
                                          else "no trial was running there")
        return (f"{name} {state}: " + ", ".join(f"trial {tid} {what}" for tid, what in parts)
                + f"; details in {log_hint(trials[0])}")


def _outlived(trial: Any) -> str:
    """A trial that ran on a node when it died and did not fail: its worker process outlived it."""
    if trial.status == "TERMINATED":
        return "finished there: its worker process outlived the node"
    return "is still running: its worker process outlived the node"


def _raylet_gone(info: dict) -> bool:
    """Whether the node's raylet port refuses connections (its raylet died; the node table says
    so only 15 to 40 s later). A port that does not answer in time may be a slow network: not gone."""
    host, port = info.get("NodeManagerAddress"), info.get("NodeManagerPort")
    if not host or not port:
        return False
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_S).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _nodes() -> dict[str, dict]:
    """Ray's node table by node id (empty when it cannot be read)."""
    try:
        return {n["NodeID"]: n for n in ray.nodes()}
    except Exception:  # noqa: BLE001 - only for the wording of a console line
        return {}


def log_hint(trial: Any) -> str:
    """Where the details of a trial's failure are: the experiment's Ray log, else its error.txt."""
    try:
        exp = Path(trial.path).parent
    except (TypeError, AttributeError):
        return "error.txt"
    return str(exp / RAY_LOG) if (exp / RAY_LOG).is_file() else f"{trial.path}/error.txt"
