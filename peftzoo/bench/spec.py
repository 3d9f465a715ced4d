"""What a run is: a plain-data ``RunSpec`` (every setting that changes its result), so any process can run it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from peftzoo import BEHAVIOUR_VERSION
from peftzoo.bench import store
from peftzoo.bench.tasks import data_source, get_task


REGRESSION_TARGETS = ("raw", "standardize")


@dataclass(frozen=True)
class RunSpec:
    suite: str
    task: str
    method: str
    seed: int
    hparams: dict = field(default_factory=dict)  # method kwargs (e.g. {"r": 8}); the budget solver fills them
    model: str | None = None  # transformers id or path; None = embedded all-MiniLM-L6-v2
    targets: object = ("query", "value")
    train: tuple = ("classifier",)
    lr: float = 1e-3
    epochs: int = 1
    batch_size: int = 16
    max_len: int = 128
    max_train: int | None = None
    max_eval: int | None = None
    warmup: float = 0.06
    weight_decay: float = 0.0
    budget: int | None = None  # target adapter elements; None = not matched
    achieved: int | None = None  # the solver's count for hparams
    skip_reason: str | None = None  # set when the budget cannot be met within tolerance
    random_init: bool = False  # same architecture with random weights (intrinsic-dimension comparisons)
    precision: str = "auto"  # autocast: "auto" = bf16 on CUDA, fp32 on CPU; "bf16" / "fp32" force it
    data: str | None = None  # the data's identity (tasks.data_source); None until bound to a data dir (bind_data)
    skip_bad_rows: bool = False  # malformed data rows left out (and counted) instead of an error
    selection: str = "validation"  # the table picks LR and epoch on the validation split (see bench.protocol)
    behaviour: int = BEHAVIOUR_VERSION  # peftzoo's training behaviour version (see peftzoo.BEHAVIOUR_VERSION)
    cell: str = ""  # the budget point's label in tables ("73,728", "paper", "—"); not part of the run's identity
    val_fraction: float = 0.1  # validation held back from train for selection: this share of it...
    val_cap: int = 1000  # ...at most this many examples...
    val_seed: int = 0  # ...drawn with this seed (the same split for every run)
    # regression labels as given ("raw") or standardised with the training subset's mean and std ("standardize";
    # predictions mapped back): a head that starts near 0 against STS-B's labels (mean 2.7) spends a short run on
    # the offset, and LoRA-family runs collapse to predicting the mean (measured: results/cpu-stsb-raw)
    regression_targets: str = "raw"

    def __post_init__(self):
        if self.regression_targets not in REGRESSION_TARGETS:
            raise ValueError(f"regression_targets is {self.regression_targets!r}; one of "
                             f"{', '.join(REGRESSION_TARGETS)}")
        try:
            regression = get_task(self.task).regression
        except ValueError:  # an unknown task: load_task reports it
            return
        if not regression:  # a no-op for classification: normalised, so it does not change the run's identity
            object.__setattr__(self, "regression_targets", "raw")

    @property
    def label(self) -> str:
        """How progress bars and messages name the run: task, method, budget cell, LR and seed."""
        cell = f" {self.cell}" if self.cell and self.cell != "—" else ""
        return f"{self.task} {self.method}{cell} lr={self.lr:g} s{self.seed}"

    @property
    def run_id(self) -> str:
        """Readable prefix + hash of every field but store.ID_EXCLUDE: a changed config is a new run."""
        return store.run_id(self.to_dict())

    def bind_data(self, data_dir=None) -> RunSpec:
        """This spec with ``data`` set to what ``data_dir`` (else $PEFTZOO_DATA_DIR, else the hub) holds."""
        return dataclasses.replace(self, data=data_source(get_task(self.task), data_dir))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
