"""benchmarks/speed.py at its smallest setting: the rows of prompt tuning, BitFit, Delta-LoRA and GaLore appear with
finite ratios, PEFT's ratio beside ours where PEFT has the method and "—" where it has none, GaLore timed with its
own projected-Adam step (no timing asserted)."""
import json
import math
import sys
from pathlib import Path

import peftzoo.adapters  # noqa: F401  fills the registry
from peftzoo.registry import get

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import speed  # noqa: E402

NEW = ["prompt n=20", "bitfit", "deltalora r=8", "galore r=4"]


def test_every_row_without_peft_is_a_method_peft_lacks():
    """A row gets "—" only for a method with no PEFT equivalent (the registry's method has no PEFT codec)."""
    for name, c in speed.CONFIGS.items():
        assert (c.peft is None) == (get(c.method).peft is None), name
    assert {n for n, c in speed.CONFIGS.items() if c.peft is None} == {"bitfit", "deltalora r=8", "galore r=4"}


def test_smallest_setting_writes_the_new_rows(tmp_path):
    speed.main(["--hidden", "32", "--layers", "1", "--ffn", "64", "--seq", "8", "--batch", "2", "--threads", "1",
                "--rounds", "1", "--steps", "1", "--out", str(tmp_path), "--methods", "lora r=8", *NEW])
    d = json.loads((tmp_path / "cpu-h32-l1.json").read_text())
    rows = {r["method"]: r for r in d["rows"]}
    assert list(rows) == ["lora r=8", *NEW]
    for name, r in rows.items():
        assert math.isfinite(r["peftzoo"]["ratio"]) and r["peftzoo"]["ratio"] > 0, name
    for name in ("lora r=8", "prompt n=20"):  # PEFT has them: its ratio in the same run
        assert math.isfinite(rows[name]["peft"]["ratio"]) and math.isfinite(rows[name]["vs_peft"]), name
    for name in ("bitfit", "deltalora r=8", "galore r=4"):
        assert "peft" not in rows[name] and "vs_peft" not in rows[name], name
    assert rows["galore r=4"]["peftzoo"]["optimizer"] == "GaloreAdamW"  # the adapter's make_optimizer
    assert {rows[n]["peftzoo"]["optimizer"] for n in ("lora r=8", "prompt n=20", "bitfit", "deltalora r=8")} == {
        "AdamW"}
    md = (tmp_path / "cpu-h32-l1.md").read_text()
    lines = {ln.split(" |")[0].lstrip("| ").rstrip(" †"): ln for ln in md.splitlines() if ln.startswith("| ")}
    for name in ("bitfit", "deltalora r=8", "galore r=4"):
        assert lines[name].count("—") == 3, lines[name]  # PEFT ratio, peftzoo / PEFT, PEFT saved MB
    assert "—" not in lines["prompt n=20"]
    assert "galore r=4: the step includes GaLore's projected-Adam optimizer step" in md
    # prompt tuning lengthens every sequence by its 20 tokens in both libraries: its row's floor is the frozen
    # model timed on that longer sequence, every other row's the plain one
    assert rows["prompt n=20"]["floor_seq"] == 8 + 20 and rows["lora r=8"]["floor_seq"] == 8
    assert set(d["floors_s"]) == {"8", "28"} and {"floor|floor", "floor+20|floor"} <= set(d["times"])
    z = rows["prompt n=20"]["peftzoo"]
    assert math.isclose(z["ratio"], z["step_ms"] / 1e3 / d["floors_s"]["28"])
