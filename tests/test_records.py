"""The run record's one schema (bench.record): a RunRecord written and read back is the same record, a bad file says
what is wrong with it, the protocol travels in the spec (recorded beside it), fit's callbacks see every step and
epoch, and d90 settings are hashed as run ids are."""
import dataclasses
import json

import pytest
import torch
from benchkit import fake_execute

from conftest import tiny_bert
from peftzoo.bench.protocol import Protocol
from peftzoo.bench.record import EpochResult, RecordError, RunRecord
from peftzoo.bench.spec import RunSpec
from peftzoo.bench.train import Callback, fit


def _spec(**kw):
    return RunSpec(suite="t", task="SST-2", method="lora", seed=0, hparams={"r": 2}, **kw)


def test_a_record_written_and_read_back_is_the_same_record():
    rec = fake_execute(_spec(protocol=Protocol(sweep_seeds=2), stage=1, request={"preset": "quick"}))
    rec = dataclasses.replace(rec, extra={"adalora_ranks": {"a": 2}}, target_scale={"mean": 2.5, "std": 1.5})
    d = json.loads(json.dumps(rec.to_json()))
    assert RunRecord.from_json(d) == rec
    # the layout of every committed run: protocol (with the stage) and bench beside the spec, best and final
    # epochs derived from the history, the adapter's own fields at the top level
    assert d["protocol"] == {**Protocol(sweep_seeds=2).to_dict(), "stage": 1} and d["bench"] == {"preset": "quick"}
    assert "protocol" not in d["spec"] and "stage" not in d["spec"] and d["spec"]["train"] == ["classifier"]
    assert d["best_epoch"] == 1 and d["metrics_best"] == d["metrics_final"] == {"score": 0.5}
    assert d["adalora_ranks"] == {"a": 2} and d["run_id"] == rec.spec.run_id


def test_the_best_epoch_is_the_first_best_dev_score_and_never_a_missing_one():
    rec = fake_execute(_spec())
    scores = [0.6, float("nan"), 0.8, 0.8]
    rec = dataclasses.replace(rec, history=[EpochResult({"score": s}, {"score": 0.5}, epoch=i + 1)
                                            for i, s in enumerate(scores)])
    d = rec.to_json()
    assert rec.best_epoch == 3 and d["metrics_best"] == {"score": 0.8} and d["metrics_final"] == {"score": 0.8}


@pytest.mark.parametrize("edit,problem", [
    (lambda d: d.update(run_id="lora--r2--s0--000000000000"), r"its run_id .* does not match its spec"),
    (lambda d: d["spec"].update(lr=0.5), r"does not match its spec \(hash: 'lora--r2--s0--"),
    (lambda d: d["spec"].update(rank=8), r"its spec cannot be read \(unknown field\(s\) rank"),
    (lambda d: d.update(status="done"), r"status 'done' is not one of ok, failed, skipped"),
    (lambda d: d.update(seed=3), r"'seed' 3 differs from its spec's 0"),
    (lambda d: d["history"][-1]["metrics"].update(score=None), r"the final epoch's score is missing"),
    (lambda d: d.update(history=[]), r"'history' has no epochs"),
    (lambda d: d.update(params={"target": None}), r"params lacks target/trainable/adapter"),
])
def test_a_bad_record_says_what_is_wrong(edit, problem):
    d = fake_execute(_spec()).to_json()
    edit(d)
    with pytest.raises(RecordError, match=problem):
        RunRecord.from_json(d)


def test_a_record_named_otherwise_than_its_id_is_refused(tmp_path):
    d = fake_execute(_spec()).to_json()
    with pytest.raises(RecordError, match="file name does not match its run_id"):
        RunRecord.from_json(d, tmp_path / "other.json")
    assert RunRecord.from_json(d, tmp_path / f"{d['run_id']}.json").run_id == d["run_id"]


def test_the_protocol_and_stage_are_recorded_beside_the_spec_and_leave_the_run_id_alone():
    base = _spec()
    staged = dataclasses.replace(base, protocol=Protocol(select_epoch=False), stage=2, request={"preset": "x"})
    assert staged.run_id == base.run_id and staged.to_dict() == base.to_dict()


class Log(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, ad, total_steps):
        self.events.append(("begin", total_steps))

    def on_step_end(self, step, loss):
        self.events.append(("step", step))

    def on_epoch_end(self, result):
        self.events.append(("epoch", result.epoch, result.score))


def test_fit_calls_each_callback_hook_once_per_step_and_per_epoch_in_order():
    import peftzoo
    ad = peftzoo.attach(tiny_bert(num_labels=2), "lora", targets=["query", "value"], r=2)
    ids = torch.randint(0, 100, (4, 6), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids[i:i + 2], "labels": torch.tensor([0, 1])} for i in (0, 2)]
    log, scores = Log(), iter([{"score": 0.25}, EpochResult({"score": 0.75}, {"score": 0.5})])
    res = fit(ad, lambda e: batches, epochs=2, lr=1e-3, evaluate=lambda: next(scores), callbacks=[log])
    assert log.events == [("begin", 4), ("step", 1), ("step", 2), ("epoch", 1, 0.25), ("step", 3), ("step", 4),
                          ("epoch", 2, 0.75)]
    assert [(h.epoch, h.dev, h.val) for h in res.history] == [(1, {"score": 0.25}, None), (2, {"score": 0.75},
                                                                                             {"score": 0.5})]
    assert all(h.loss > 0 for h in res.history)  # the epoch's mean training loss


def test_d90_settings_are_hashed_as_run_ids_are(tmp_path):
    from peftzoo.intrinsic import d90
    spec = _spec()
    assert d90.config_id(spec.identity()) == spec.run_id.rsplit("--", 1)[1]  # the same hash of plain data
    cfg = {"task": "mnist", "lr": 1e-3, "grid": (10, 100)}
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"config": {"task": "mnist", "lr": 0.001, "grid": [10, 100]}, "scores": {"10/0": 0.5}}))
    assert d90.Search(None, 1.0, [0], trivial=0.1, path=path, config=cfg).scores == {"10/0": 0.5}  # typed alike
    with pytest.raises(d90.CacheMismatch, match=r"lr: 0\.001 there, 0\.002 now"):
        d90.Search(None, 1.0, [0], trivial=0.1, path=path, config={**cfg, "lr": 2e-3})
