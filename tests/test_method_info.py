"""What a method declares beside its contract (issue 21, item 5): ``info`` (a MethodInfo) and ``peft`` (a PeftCodec
or None), read by the listing, the demo, io.py and the benchmark without probing for attributes."""
import dataclasses

import pytest

import peftzoo
from peftzoo import adapters
from peftzoo.adapters.info import MethodInfo
from peftzoo.adapters.lora import Lora
from peftzoo.cli import main
from peftzoo.io import PeftCodec

ALL = list(adapters.REGISTRY)


@pytest.mark.parametrize("method", ALL)
def test_every_method_declares_its_info_and_codec(method):
    cls = adapters.get(method)
    assert isinstance(cls.info, MethodInfo) and cls.info.equation and cls.info.formula
    assert bool(cls.info.paper) != cls.info.baseline  # a method cites its paper; a baseline has none
    assert cls.peft is None or (isinstance(cls.peft, PeftCodec) and cls.peft.peft_type)
    if cls.info.budget_knob is not None:  # the knob is a field of the method's config
        assert cls.info.budget_knob in {f.name for f in dataclasses.fields(cls.config_cls)}
    assert method in peftzoo.methods() or cls.info.baseline


def test_methods_lists_equation_count_paper_knob_grid_and_file_format(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    blocks = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            name = line.split()[0]
        blocks[name] = blocks.get(name, "") + line + "\n"
    assert sorted(blocks) == sorted(ALL)
    for name, text in blocks.items():
        i = adapters.get(name).info
        assert i.equation in text and f"[{i.formula}]" in text and i.paper in text
    # by hand: the settings the method files state
    assert "budget knob r · LR grid 0.0001, 0.0003, 0.001, 0.003 · PEFT file LORA" in blocks["lora"]
    assert "budget knob target_r" in blocks["adalora"] and "paper setting init_r=12, target_r=8" in blocks["adalora"]
    assert "paper setting r=1024 · PEFT file VERA" in blocks["vera"]
    assert "no budget knob" in blocks["bitfit"] and "no PEFT file" in blocks["bitfit"]
    assert "(baseline) every parameter trained" in blocks["full"] and "a reference of every table" in blocks["full"]
    assert "no PEFT file" in blocks["did"] and "budget knob d" in blocks["did"]


def test_methods_verbose_lists_each_option_and_its_default(capsys):
    assert main(["methods", "-v"]) == 0
    out = capsys.readouterr().out
    assert "    r = 8" in out and "    lr_ratio = 16.0" in out and "    d = 1000" in out


def test_bench_names_are_read_only_aliases_of_info():
    ada = adapters.get("adalora")
    assert (Lora.budget_knob, Lora.default_lr, Lora.default_lr_grid) == ("r", 5e-4, (1e-4, 3e-4, 1e-3, 3e-3))
    assert ada.paper_hparams == {"init_r": 12, "target_r": 8} and ada.budget_knob == "target_r"
    assert adapters.get("full").baseline and not Lora.baseline
    assert adapters.get("rslora").info.lr_grid == Lora.info.lr_grid  # a variant replaces what differs only
    ad = peftzoo.attach(__import__("conftest").tiny_bert(), "lora", targets=["query"])
    with pytest.raises(AttributeError, match=r"budget_knob is read from the method's info: declare it in "
                                             r"info = MethodInfo\(\.\.\., budget_knob=\.\.\.\)"):
        ad.budget_knob = "alpha"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Lora.info.default_lr = 1.0
    with pytest.raises(TypeError):
        ada.info.paper_hparams["init_r"] = 99  # shared by every caller: frozen too


def test_a_method_written_in_the_old_class_attribute_style_is_an_error_naming_the_fix():
    with pytest.raises(TypeError, match=r"Galore sets default_lr, default_lr_grid, paper as class attributes: "
                                        r"declare them as info = MethodInfo\(default_lr=\.\.\., lr_grid=\.\.\., "
                                        r"paper=\.\.\.\) \(peftzoo/adapters/info.py"):
        type("Galore", (Lora,), {"default_lr": 1e-3, "default_lr_grid": (1e-3,), "paper": "Zhao et al. 2024"})


def test_lr_sweep_by_hand_and_bad_rates_refused():
    assert MethodInfo(default_lr=1e-3).lr_sweep() == (0.000316, 0.001, 0.00316, 0.01)  # 1e-3 · 10^(k/2), k=-1..2
    assert MethodInfo(lr_grid=[1e-4, 1e-3]).lr_sweep() == (1e-4, 1e-3)
    with pytest.raises(ValueError, match="learning rates must be > 0"):
        MethodInfo(lr_grid=(0.0, 1e-3))


def test_a_method_without_codec_says_so_on_save_peft(tmp_path):
    from conftest import tiny_bert
    ad = peftzoo.attach(tiny_bert(), "did", d=10)
    with pytest.raises(NotImplementedError, match="did has no Hugging Face PEFT equivalent; use ad.save"):
        ad.save_peft(tmp_path)
    assert not any(tmp_path.iterdir())
