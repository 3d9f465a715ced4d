"""precision "bf16" on a CPU without native bf16 is emulated and far slower than fp32: warned, naming the flags
(issue 20 item 6). The CPU's flags are injected, so these tests mean the same on every machine."""
import warnings

import pytest
import torch
from conftest import tiny_bert

import peftzoo
from peftzoo.bench import machine, preflight
from peftzoo.bench.preset import Preset
from peftzoo.bench.train import fit

X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\nbogomips\t: 4000\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"


@pytest.fixture(autouse=True)
def fresh_once(monkeypatch):
    monkeypatch.setattr(machine, "_warned", set())


def test_flags_are_read_from_cpuinfo():
    assert machine.cpu_flags(X86) == {"fpu", "sse2", "avx2", "avx512f", "avx512_vnni"}
    assert "bf16" in machine.cpu_flags(ARM)
    assert machine.cpu_flags("processor\t: 0\n") is None


def test_the_warning_names_the_flags_and_suggests_fp32():
    msg = machine.bf16_cpu_warning(machine.cpu_flags(X86))
    assert "avx512_bf16" in msg and "amx_bf16" in msg and "precision 'fp32'" in msg
    for native in ({"avx2", "amx_bf16"}, {"avx512_bf16"}, machine.cpu_flags(ARM)):
        assert machine.bf16_cpu_warning(native) is None
    assert machine.warn_bf16_cpu("cpu", "fp32", set()) is None and machine.warn_bf16_cpu("cuda", "bf16", set()) is None


def _one_step_fit(precision):
    ad = peftzoo.attach(tiny_bert(), "lora", r=2, train=["classifier"])
    batch = {"input_ids": torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(0)),
             "labels": torch.tensor([0, 1])}
    return fit(ad, lambda epoch: [batch], epochs=1, lr=1e-3, precision=precision)


def test_training_in_bf16_on_such_a_cpu_warns_once(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda cpuinfo=None: {"avx2"})
    with pytest.warns(RuntimeWarning, match="CPU without native bf16.*avx512_bf16, amx_bf16.*precision 'fp32'"):
        _one_step_fit("bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _one_step_fit("bf16")  # once per process: a sweep of many runs says it once
        _one_step_fit("fp32")


def test_training_in_bf16_on_a_native_cpu_is_quiet(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda cpuinfo=None: {"avx2", "amx_bf16"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert _one_step_fit("bf16").steps == 1


def test_preflight_warns_before_any_run(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda cpuinfo=None: set())
    p = Preset.from_dict({"suite": "s", "tasks": ["sst2", "rte"], "methods": ["lora"],
                          "task_overrides": {"rte": {"precision": "bf16"}}})
    assert preflight.preset_precisions(p) == {"auto", "bf16"}
    assert preflight.check_precision({"auto", "fp32"}, "cpu") is None
    assert preflight.check_precision({"bf16"}, "cuda") is None  # a GPU's bf16 is its own matter
    with pytest.warns(RuntimeWarning, match="without native bf16"):
        assert "fp32" in preflight.check_precision(preflight.preset_precisions(p), "cpu")
