"""Rows 12, 13, 16, 17 and 19 of results/claims: verdicts on hand-made records (holds, does not hold, undecided), the
ΔW probe on real (tiny) runs, and the plans end to end on a tiny model (`run.py --rows ... --smoke`), resumed."""
import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "claims"))
verdicts_b = pytest.importorskip("verdicts_b")

from test_claims_plans import LRS, NOISE, OTHER, _run, config, rec, tiny_data  # noqa: E402,F401

Z, RND = "LoRA r=8 zero-B", "LoRA r=8 both random"
HALF, HALF2 = tuple(x / 2 for x in NOISE), tuple(x / 2 for x in OTHER)  # smaller per-seed noise for ranks
N3 = (0.2, -0.1, 0.1)  # a third configuration's per-seed noise (points)


def probed(r, stable, eff=None, fro=0.05, num=8.0, init=1.0):
    spec = {"stable_rank": stable, "effective_rank": min(stable + 2, 7.5) if eff is None else eff, "dW_fro": fro,
            "numerical_rank": num}
    return dataclasses.replace(r, extra={"delta_spectrum": {"init_factor_fro": init, "first_step_fro": 0.01,
                                                            "epochs": [{"epoch": 1, **spec}]}})


def cfg12(stable, fro=0.05, fail=None, noise=HALF):
    """A row-12 configuration (LoRA r=8, selected at LRS[1]): ΔW stable rank ``stable`` + per-seed noise; ``fail``:
    (effective rank, ‖ΔW‖_F) of a failed run at LRS[2] (validation 0.5)."""
    runs = config("lora", 85.0)
    out = [probed(r, stable + noise[r.seed], fro=fro) for r in runs]
    if fail is not None:
        out[2] = probed(rec("lora", LRS[2], 0, 0.5), 7.0, eff=fail[0], fro=fail[1])
    return out


def test_row12_holds_low_rank_decay_lowers_it_and_failures_are_loud():
    g = {}
    for init, base in ((Z, 1.0), (RND, 4.5)):
        g[(init, 0.0)] = cfg12(base + 1.5, fail=(7.9, 5.0))
        g[(init, 1.0)] = cfg12(base, noise=HALF2)
    d = verdicts_b.row12(g)
    assert d["verdict"] == "**holds**", d
    assert d["failures"] == {RND: 1, Z: 1}


def test_row12_does_not_hold_with_high_rank_converged_runs_rank_rising_with_decay_and_quiet_failures():
    g = {(Z, 0.0): cfg12(5.5, fail=(3.0, 0.01)), (Z, 1.0): cfg12(7.0, noise=HALF2)}
    d = verdicts_b.row12(g)
    assert d["verdict"] == "**does not hold**", d
    assert d["parts"]["fails loudly"].startswith("does not hold")


def test_row12_undecided_without_failures_and_a_rank_near_half_r():
    g = {(Z, 0.0): cfg12(4.0), (Z, 1.0): cfg12(4.0, noise=HALF2)}
    d = verdicts_b.row12(g)
    assert d["parts"]["fails loudly"].startswith("undecided (no run failed")
    assert d["parts"]["low rank"].startswith("undecided") and d["verdict"].startswith("**undecided**"), d


def test_row12_a_blown_up_run_is_loud_a_crashed_one_apart_and_all_failed_configs_compare_with_the_row():
    g = {(Z, 0.0): cfg12(1.5), (Z, 1.0): cfg12(1.0, noise=HALF2)}
    nan = dataclasses.replace(rec("lora", LRS[2], 0, 0.5), extra={"delta_spectrum": {"epochs": [{"nonfinite": True}]}})
    g[(Z, 0.0)][2] = nan
    g[(Z, 1.0)][0] = dataclasses.replace(rec("lora", LRS[0], 0, 0.5), status="failed")
    g[(RND, 0.0)] = [probed(r, 6.0, eff=7.9, fro=5.0) for r in config("lora", 50.0)]  # every run fails, loudly
    d = verdicts_b.row12(g)
    assert d["parts"]["fails loudly"] == "holds" and "(1 crashed, no ΔW)" in d["ours"], d
    assert d["failures"] == {Z: 2, RND: 5}


def test_row12_plot_draws_every_measured_run_and_marks_the_failed(tmp_path):
    import planrun
    import plots_b
    g = {(Z, 0.0): cfg12(1.5, fail=(7.9, 5.0)), (Z, 1.0): cfg12(1.0, noise=HALF2),
         (RND, 0.0): cfg12(5.0, noise=HALF2)}
    g[(Z, 1.0)][0] = dataclasses.replace(g[(Z, 1.0)][0], extra={})  # not probed: not drawn
    d = verdicts_b.row12(g)
    drawn = plots_b.row12(d, tmp_path)
    assert drawn == {f"{RND}, wd 0": 5, f"{Z}, wd 0": 4, f"{Z}, wd 0 (failed)": 1, f"{Z}, wd 1": 4}
    assert (tmp_path / "c12_lowrank.png").stat().st_size > 0
    assert planrun.measured_row("12", {**d, "setup": "s"})[7] == "c12_lowrank.png"


def test_row12_counts_unfinished_and_nonfinite_runs_as_failed():
    bad = rec("lora", 1e-2, 0, float("nan"))
    assert verdicts_b.failed(bad, 0.6) and verdicts_b.failed(None, 0.6)
    assert not verdicts_b.failed(rec("lora", 1e-2, 0, 0.8), 0.6)


def groups13(lora, pissa, loram, loram_init=1.5):
    return {("LoRA", 8): config("lora", lora), ("PiSSA", 8): [probed(r, 3.0) for r in config("lora", pissa, noise=N3)],
            ("LoRAM", 8): [probed(r, 3.0, init=loram_init) for r in config("lora", loram, noise=OTHER)]}


def test_row13_holds_when_loram_recovers_pissa_gain_and_reports_magnitudes():
    d = verdicts_b.row13(groups13(80.0, 83.0, 83.0))
    assert d["verdict"] == "**holds**", d
    assert "PiSSA ‖s·BA‖_F at init 1, first step 0.01" in d["ours"] and "LoRAM ‖s·BA‖_F at init 1.5" in d["ours"]
    d = verdicts_b.row13(groups13(80.0, 83.0, 83.0, loram_init=2.5))  # the premise fails: not magnitude-matched
    assert d["verdict"] == "**undecided**: LoRAM's init magnitude is 2.50× PiSSA's, not matched within 2×", d


def test_row13_does_not_hold_when_pissa_stays_ahead_and_undecided_without_a_gain():
    assert verdicts_b.row13(groups13(80.0, 83.0, 80.2))["verdict"].startswith("**does not hold**")
    d = verdicts_b.row13(groups13(80.0, 80.0, 83.0))
    assert d["verdict"].startswith("**undecided**: no significant PiSSA gain"), d


def by_rank(a, b, scores: dict, best=1):
    g = {}
    for r, (sa, sb) in scores.items():
        g[(a, r)] = config("lora", sa, noise=OTHER, best=best)
        g[(b, r)] = config("lora", sb)
    return g


def test_row16_holds_at_every_rank_does_not_when_reversed_mixed_otherwise():
    assert verdicts_b.row16(by_rank("PiSSA", "LoRA", {1: (83, 80), 8: (84, 81)}))["verdict"] == "**holds**"
    assert verdicts_b.row16(by_rank("PiSSA", "LoRA", {1: (77, 80), 8: (78, 81)}))["verdict"] == "**does not hold**"
    d = verdicts_b.row16(by_rank("PiSSA", "LoRA", {1: (83, 80), 8: (81, 81)}, best=0))
    assert d["verdict"].startswith("**mixed**") and "grid end" in d["verdict"], d


def test_row17_reports_the_relative_gain_against_the_papers():
    d = verdicts_b.row17(by_rank("DoRA", "LoRA", {1: (85, 68), 2: (85, 68), 4: (85, 68)}))
    assert d["verdict"] == "**holds**", d
    assert "(+25." in d["ours"]  # (85 − 68) / 68 = 25%, inside the paper's 22–37%
    d = verdicts_b.row17(by_rank("DoRA", "LoRA", {1: (80, 80.2), 2: (80, 80.1)}))
    assert d["verdict"].startswith("**undecided**"), d


def groups19(rank_gap, score_gap):
    g = {("LoRA", 8): [probed(r, 2.0, eff=5.0) for r in config("lora", 80.0)]}
    g[("Delta-LoRA", 8)] = [probed(r, 2.0, eff=5.0 + rank_gap + OTHER[r.seed] / 2, num=14.0)
                            for r in config("deltalora", 80.0 + score_gap, noise=OTHER)]
    return g


def test_row19_holds_with_a_higher_rank_and_score_does_not_when_both_lower():
    assert verdicts_b.row19(groups19(3.0, 3.0))["verdict"] == "**holds**"
    assert verdicts_b.row19(groups19(-3.0, -3.0))["verdict"] == "**does not hold**"
    d = verdicts_b.row19(groups19(3.0, 0.0))
    assert d["parts"] == {"rank": "holds", "score": "undecided (CI holds 0)"}, d


def _spec(model, method, hparams, lr=1e-2, epochs=2):
    from peftzoo.bench.spec import RunSpec
    return RunSpec(suite="t", task="SST-2", method=method, seed=0, hparams=hparams, model=model, lr=lr,
                   epochs=epochs, batch_size=8, max_len=16, max_train=48, val_cap=8)


@pytest.mark.parametrize("method, hp", [("lora", {"r": 2, "alpha": 4}),
                                        ("deltalora", {"r": 2, "alpha": 4, "start_steps": 0})])
def test_probe_changes_nothing_and_measures_the_change_of_w(tiny_data, tmp_path, method, hp):
    import planrun
    from probe import DeltaSpectrum

    from peftzoo.bench.models import make_adapter
    from peftzoo.bench.runner import execute
    s = _spec(planrun.tiny_model(tmp_path), method, hp)
    plain = execute(s, tiny_data, progress=False)
    got, pr = [], DeltaSpectrum(s)
    rec_ = execute(s, tiny_data, progress=False, callbacks=[pr], attach=lambda m, sp: got.append(make_adapter(m, sp))
                   or got[-1])
    assert plain.ok and rec_.ok, (plain.error, rec_.error)
    assert [h.loss for h in rec_.history] == [h.loss for h in plain.history]
    assert [h.dev for h in rec_.history] == [h.dev for h in plain.history]
    out = pr.summary()
    end = out["epochs"][-1]
    assert len(out["epochs"]) == 2 and out["init_move_fro"] == 0.0 and out["first_step_fro"] > 0
    dw = [ly.delta_weight().detach().double().norm().item() for ly in got[0].layers.values()]
    if method == "lora":  # W never moves: ΔW is s·B A, of rank <= r
        assert end["dW_fro"] == pytest.approx(sum(dw) / len(dw), rel=1e-6)
        assert end["numerical_rank"] <= 2 and end["effective_rank"] <= 2 + 1e-9
    else:  # W moved by λ·s·(B A − B_a A_a): the total change has more than r directions
        assert end["numerical_rank"] > 2 and end["dW_fro"] > sum(dw) / len(dw)


def test_probe_sees_the_inits_magnitudes(tiny_data, tmp_path):
    import planrun
    from probe import DeltaSpectrum

    from peftzoo.bench.runner import execute
    model = planrun.tiny_model(tmp_path)
    out = {}
    for init in (True, False, "pissa"):
        pr = DeltaSpectrum(_spec(model, "lora", {"r": 2, "alpha": 4, "init_lora_weights": init}, epochs=1))
        assert execute(pr.spec, tiny_data, progress=False, callbacks=[pr]).ok
        out[init] = pr.summary()
    assert out[True]["init_move_fro"] == 0.0 and out[True]["init_factor_fro"] == 0.0
    assert out[False]["init_move_fro"] > 0.1  # both random: the output moves at init
    assert out["pissa"]["init_move_fro"] < 1e-5 < out["pissa"]["init_factor_fro"]  # W's top part moved into B A


def test_rows_b_run_end_to_end_on_a_tiny_model_share_runs_and_resume(tiny_data, tmp_path):
    work = tmp_path / "work"
    args = ["--rows", "12,13,16,17,19", "--smoke", "--work", str(work), "--data-dir", str(tiny_data)]
    out = _run(args + ["--dry-run"])
    assert "row 12: 16 runs: 8 to run, 8 to run after the sweep" in out, out
    assert "row 16: 16 runs: 8 to run, 8 to run after the sweep (8 of them an earlier row's)" in out, out
    out = _run(args)
    got = json.loads((work / "smoke" / "plans" / "verdicts.json").read_text())
    assert set(got) == {"12", "13", "16", "17", "19"} and all(v["verdict"].startswith("**") for v in got.values())
    files = list((work / "smoke" / "plans").rglob("*.json"))
    runs = [p for p in files if p.name != "verdicts.json"]
    assert {p.relative_to(work / "smoke" / "plans").parts[0] for p in runs} == {"shared", "shared-probed"}
    assert len(runs) == out.count("  run ") < sum(v["runs"] for v in got.values())  # shared runs trained once
    probed_ = [json.loads(p.read_text()) for p in (work / "smoke" / "plans" / "shared-probed").rglob("*.json")]
    assert probed_ and all(r["delta_spectrum"]["epochs"] for r in probed_ if r["status"] == "ok")  # (extra: top level)
    assert (work / "smoke" / "plans" / "c12_lowrank.png").stat().st_size > 0
    out = _run(args)  # everything read back: nothing trains again
    assert "  run " not in out and "row 17: 16 runs: 16 cached" in out, out
    assert len(list((work / "smoke" / "plans").rglob("*.json"))) == len(files)


def test_rows_b_in_the_report_are_planned_with_their_rule_and_command_and_no_number():
    import planrun
    for r in ("12", "13", "16", "17", "19"):
        row = planrun.planned_row(r)
        assert row[0] == r and row[5] == "planned (not yet run)" and f"--rows {r}" in row[4] and row[6], row
        assert row[3].startswith("cpu preset setting") and "seeds 0, 1, 2" in row[3]


def test_a_plain_request_is_served_by_any_rows_record_a_probed_one_only_by_a_probed_record(tmp_path):
    import plans

    from peftzoo.bench import store
    r = dataclasses.replace(rec("lora", 1e-3, 0, 0.8), params={"target": 1, "trainable": 1, "adapter": 1},
                            device="cpu", adapter_file_bytes=1, median_step_s=0.1)  # (fields the store checks)
    plans_dir = tmp_path / "plans"
    store.write_record(store.run_path(plans_dir / "14", "", r.task, r.run_id), r)  # row 14's run, same spec
    scale = plans.Scale(lb_root="")

    def get(probe):
        return plans._get(r.spec, plans_dir / "shared", scale, None, True, False, print, probe)
    where, got = get(False)
    assert where == "cached in another folder" and got.run_id == r.run_id
    assert get(True) == ("to run", None)  # row 14's record has no ΔW spectrum
    store.write_record(store.run_path(plans_dir / "shared-probed", "", r.task, r.run_id), r)
    assert get(True)[0] == "cached"


def test_the_committed_report_carries_the_planned_rows_as_the_code_states_them():
    import planrun
    text = (Path(__file__).resolve().parents[1] / "results" / "claims" / "README.md").read_text()
    for r in ("12", "13", "16", "17", "19"):
        n, claim, src, setup, ours, verdict, rule, _ = planrun.planned_row(r)
        assert f"| {n} | {claim} | {src} | {setup} | {ours} | {verdict} | {rule} |" in text.splitlines(), r
