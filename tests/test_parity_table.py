"""benchmarks/peft_parity.py measures, and its measure can fail: on two methods the differences it reports for the
same weights are tiny, and a weight changed on PEFT's side only makes them large."""
import importlib.util
import sys
from pathlib import Path

import pytest

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("peft_parity", ROOT / "benchmarks" / "peft_parity.py")
parity = sys.modules["peft_parity"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(parity)
CASES = {c.name: c for c in parity.CASES}


@pytest.mark.parametrize("name", ["dora r=4", "oft b=8"])
def test_same_weights_measure_small_and_a_perturbed_weight_measures_large(name):
    row = parity.measure(CASES[name])
    assert row["tensors_compared"] == row["tensors"] > 0  # every adapter tensor found on both sides
    assert row["logits"] < 1e-5 and row["grad"] < 1e-5 and row["merged"] < 1e-5 and row["counts_equal"]
    assert row["adapter_effect"] > 1e-3 and row["grad_scale"] > 1e-4  # the compared weights and gradients matter
    bad = parity.measure(CASES[name], perturb=0.5)
    assert bad["logits"] > 1e-4 and bad["merged"] > 1e-3  # >= 100x the bound the same weights pass


def test_the_table_has_a_row_per_case_and_the_numbers_given(tmp_path):
    rows = [parity.measure(CASES["ia3"])]
    parity.write(rows, tmp_path)
    md = (tmp_path / "peft_parity.md").read_text()
    assert "| ia3 |" in md and f"{rows[0]['logits']:.1e}" in md and f"peft {peft.__version__}" in md
