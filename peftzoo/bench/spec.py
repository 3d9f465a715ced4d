"""What a run is: a plain-data ``RunSpec`` (every setting that changes its result), so any process can run it.

Its id (``run_id``) is a readable prefix (method, hparams, seed) and the hash of its identity (``identity()``):
every field but the labels (``suite``, ``cell``) and the protocol context recorded beside it (``protocol``,
``stage``, ``request``). A field added after runs were recorded is declared with ``added(value)``: at that value
it is left out of the id, so older runs keep theirs (and their records, which lack it, read as that value).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from peftzoo import BEHAVIOUR_VERSION, registry
from peftzoo.bench import identity, taskdef
from peftzoo.bench.pooled import LAST_LAYERS
from peftzoo.bench.tasks import data_source, get_task

if TYPE_CHECKING:
    from peftzoo.bench.protocol import Protocol
    from peftzoo.bench.taskdef import Task

REGRESSION_TARGETS = ("raw", "standardize")
HEAD_FITS = ("steps", "cached")  # RunSpec.head_fit
TARGETS = ("query", "value")  # the default adapted modules of a run (and of a preset)
TRAIN_MODULES = ("classifier",)  # the default modules trained in full: the classification head


def label(default=dataclasses.MISSING):
    """A field that names the run (tables, folders) without changing its result: not part of its id."""
    return field(default=default, metadata={"label": True})


def beside(default=None):
    """Where the run sits in a sweep: recorded beside its spec (``RunRecord.to_json``), not part of its id."""
    return field(default=default, metadata={"beside": True})


def added(default, key: str | None = None, ident=None):
    """A setting added after runs were recorded, with the value those runs had: at it, left out of the id.
    ``ident``: what of its value is part of the id (default: all of it)."""
    return field(default=default, metadata={"legacy": default, **({"key": key} if key else {}),
                                            **({"identity": ident} if ident else {})})


@dataclass(frozen=True)
class RunSpec:
    suite: str = label()  # the results sub-folder (one folder can hold runs planned under several names)
    task: str  # GLUE task (canonical name)
    method: str  # registered method or baseline
    seed: int  # seeds torch, numpy and random, the adapter's init and the batch order
    hparams: dict = field(default_factory=dict)  # method kwargs (e.g. {"r": 8}); the budget solver fills them
    model: str | None = None  # transformers id or path; None = embedded all-MiniLM-L6-v2
    targets: object = TARGETS  # adapted modules: suffixes, a regex or "all-linear"
    # modules every method trains in full (the classification head); recorded under the key "train"
    train_modules: tuple = field(default=TRAIN_MODULES, metadata={"key": "train"})
    lr: float = 1e-3  # peak learning rate (AdamW, linear warm-up and decay)
    epochs: int = 1  # passes over the (capped) training subset
    batch_size: int = 16  # training examples per step
    max_len: int = 128  # tokens per example after truncation
    max_train: int | None = None  # training examples (the same subset for every run); None = all
    max_eval: int | None = None  # dev examples scored; None = all
    warmup: float = 0.06  # share of the steps with linear warm-up
    weight_decay: float = 0.0  # AdamW weight decay
    budget: int | None = None  # target adapter elements; None = not matched
    achieved: int | None = None  # the solver's count for hparams
    skip_reason: str | None = None  # set when the budget cannot be met within tolerance
    random_init: bool = False  # same architecture with random weights (intrinsic-dimension comparisons)
    precision: str = "auto"  # autocast: "auto" = bf16 on CUDA, fp32 on CPU; "bf16" / "fp32" force it
    data: str | None = None  # the data's identity (tasks.data_source); None until bound to a data dir (bind_data)
    # a user-defined task's definition (taskdef.Task.to_dict), so any process can read its data and the table its
    # metric; None: a built-in task. In the id without its file paths (their contents are in ``data``)
    task_def: dict | None = added(None, ident=taskdef.identity)
    skip_bad_rows: bool = False  # malformed data rows left out (and counted) instead of an error
    selection: str = "validation"  # the table picks LR and epoch on the validation split (see bench.protocol)
    behaviour: int = BEHAVIOUR_VERSION  # peftzoo's training behaviour version (see peftzoo.BEHAVIOUR_VERSION)
    cell: str = label("")  # the budget point's label in tables ("73,728", "paper", "—"); one run can serve two
    val_fraction: float = 0.1  # validation held back from train for selection: this share of it...
    val_cap: int = 1000  # ...at most this many examples...
    val_seed: int = 0  # ...drawn with this seed (the same split for every run)
    # regression labels as given ("raw") or standardised with the training subset's mean and std ("standardize";
    # predictions mapped back): a head that starts near 0 against STS-B's labels (mean 2.7) spends a short run on
    # the offset, and LoRA-family runs collapse to predicting the mean (measured: results/cpu-stsb-raw)
    regression_targets: str = added("raw")
    # how a method that trains only its head (the head baseline) trains it: "steps", in the one training loop as
    # every method; "cached", fitted to convergence by L-BFGS on frozen features computed once (bench/headfit.py;
    # lr is then L-BFGS's step length). A head-only run in 2 epochs of steps is under-trained (results/cpu: SST-2
    # 61.5 where a converged logistic regression on the same features reaches about 66). Other methods ignore it.
    head_fit: str = added("steps")
    # rows per evaluation forward pass (in length order, each batch cut to its longest row): 128 for every run
    # recorded before the setting; 32 pads far less (SST-2 dev at max_len 64: 3.5% padding tokens against 16%),
    # the same predictions up to float rounding
    eval_batch: int = added(128)
    # the last encoder layer in full ("full"), or only for the token the head pools ("pooled", bench/pooled.py:
    # BERT sequence classifiers; the same function up to float rounding, its dropout drawn for fewer elements)
    last_layer: str = added("full")
    protocol: Protocol | None = beside()  # the selection protocol the run was planned under (bench.protocol)
    stage: int | None = beside()  # 1: the LR sweep, 2: a selected LR (other seeds and budgets)
    request: dict | None = beside()  # how the sweep was asked for (preset, --skip-unreachable): the Reproduce line

    def __post_init__(self):
        if self.regression_targets not in REGRESSION_TARGETS:
            raise ValueError(f"regression_targets is {self.regression_targets!r}; one of "
                             f"{', '.join(REGRESSION_TARGETS)}")
        if self.last_layer not in LAST_LAYERS:
            raise ValueError(f"last_layer is {self.last_layer!r}; one of {', '.join(LAST_LAYERS)}")
        if not (isinstance(self.eval_batch, int) and self.eval_batch >= 1):
            raise ValueError(f"eval_batch must be an integer >= 1, got {self.eval_batch!r}")
        if self.head_fit not in HEAD_FITS:
            raise ValueError(f"head_fit is {self.head_fit!r}; one of {', '.join(HEAD_FITS)}")
        if self.method in registry.REGISTRY and not registry.get(self.method).trains_head_only:
            object.__setattr__(self, "head_fit", "steps")  # a no-op for it: normalised, its identity unchanged
        if self.task_def is not None and (not isinstance(self.task_def, dict) or self.task_def.get("name") != self.task):
            raise ValueError(f"task {self.task!r} but its recorded definition is of {self.task_def.get('name')!r}")
        try:
            regression = self.task_spec().regression
        except ValueError:  # an unknown task: load_task reports it
            return
        if not regression:  # a no-op for classification: normalised, so it does not change the run's identity
            object.__setattr__(self, "regression_targets", "raw")

    def task_spec(self) -> Task:
        """The run's task: its recorded definition (a user task), else the built-in task of that name."""
        if self.task_def is not None:
            return taskdef.from_json(json.dumps(self.task_def, sort_keys=True))
        return get_task(self.task)

    @property
    def label(self) -> str:
        """How progress bars and messages name the run: task, method, budget cell, LR and seed."""
        cell = f" {self.cell}" if self.cell and self.cell != "—" else ""
        return f"{self.task} {self.method}{cell} lr={self.lr:g} s{self.seed}"

    def identity(self) -> dict:
        """The fields that define the run's result, under their recorded keys."""
        return {_key(f): f.metadata.get("identity", _same)(v) for f, v in self._recorded()
                if not f.metadata.get("label") and not ("legacy" in f.metadata and v == f.metadata["legacy"])}

    @property
    def run_id(self) -> str:
        """``<method>--<hparams>--s<seed>--<hash of identity()>``: readable, and new for any changed setting."""
        hp = "-".join(f"{k}{_fmt(v)}" for k, v in sorted(self.hparams.items())) or "default"
        return identity.readable(f"{self.method}--{hp}--s{self.seed}") + f"--{identity.digest(self.identity())}"

    def bind_data(self, data_dir=None) -> RunSpec:
        """This spec with ``data`` set to what ``data_dir`` (else $PEFTZOO_DATA_DIR, else the hub) holds."""
        return dataclasses.replace(self, data=data_source(self.task_spec(), data_dir))

    def to_dict(self) -> dict:
        """The record's ``spec``: every field but those recorded beside it, under its recorded key."""
        return {_key(f): copy.deepcopy(v) for f, v in self._recorded()}

    @classmethod
    def from_dict(cls, d: dict, **beside_fields) -> RunSpec:
        """A spec from a record's ``spec`` (lists read as tuples); a field it lacks takes its default."""
        names = {_key(f): f.name for f in dataclasses.fields(cls) if not f.metadata.get("beside")}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} (written by another version of peftzoo?)")
        kw = {names[k]: tuple(v) if isinstance(v, list) and k in ("targets", "train") else v for k, v in d.items()}
        return cls(**kw, **beside_fields)

    def _recorded(self):
        return [(f, getattr(self, f.name)) for f in dataclasses.fields(self) if not f.metadata.get("beside")]


def not_identity() -> set[str]:
    """The RunSpec fields that do not change a run's id."""
    return {f.name for f in dataclasses.fields(RunSpec) if f.metadata.get("label") or f.metadata.get("beside")}


def _same(v):
    return v


def _key(f) -> str:
    return f.metadata.get("key", f.name)


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
