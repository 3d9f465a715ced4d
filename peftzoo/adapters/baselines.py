"""The two baselines of every table, answering the Adapter contract so the one training loop trains them too.

``full``: every parameter trained.  ``head``: only the ``train`` modules (the classification head) trained.
They are registered (``info.baseline``), so they are attached, trained and listed by name like any method, but
``peftzoo.methods()`` leaves them out: they add no tensors and have nothing to merge or save in PEFT's format.
They train the model's own tensors in place, so the model is always plain: ``unload()`` gives it back as trained
(``full`` has no base model apart from it to disable or unload to).
"""
from __future__ import annotations

import os
import tempfile

from torch import nn

from peftzoo.adapters.base import Adapter, AdapterConfig, find_train
from peftzoo.adapters.info import MethodInfo
from peftzoo.registry import register


class _Baseline(Adapter):
    guards_save_pretrained = False  # the model is always plain: its save_pretrained writes the trained model
    def __init__(self, model, config: AdapterConfig):
        super().__init__(model, config)
        self.freeze_base(find_train(model, config))

    def state(self):
        return {}

    def file_bytes(self) -> int:
        """A baseline's checkpoint is its trained tensors (for ``full``, the whole model), as one safetensors file."""
        from safetensors.torch import save_file
        with tempfile.TemporaryDirectory() as d:
            save_file({f"t{i}": p.detach().contiguous().cpu() for i, p in enumerate(self.trainable_parameters())},
                      f"{d}/t.safetensors")
            return os.path.getsize(f"{d}/t.safetensors")

    def load_state(self, tensors):
        pass

    def merge(self):
        pass

    def unmerge(self):
        pass

    @property
    def merged(self) -> bool:
        return False

    def enable_update(self, on: bool) -> None:
        pass  # ``head``: nothing but the train modules, which keep their values inside disable_adapter() everywhere

    def unload_model(self, merge: bool):
        return self.model


_NO_BASE = ("{what}: full fine-tuning trains the model's own weights in place, so no base model is kept apart from "
            "them (keep a copy of the model before attaching, e.g. copy.deepcopy(model), to compare with it)")


@register
class FullFinetune(_Baseline):
    name = "full"
    # LR grid: the literature's 1e-5..1e-4, one step up for a small model
    info = MethodInfo(equation="every parameter trained", formula="all", default_lr=5e-5,
                      lr_grid=(1e-5, 3e-5, 1e-4, 3e-4), baseline=True)

    def __init__(self, model, config):
        super().__init__(model, config)
        for p in model.parameters():
            p.requires_grad_(True)
        head = {id(p) for m in self._train_modules.values() for p in m.parameters()}
        self._body = [p for p in model.parameters() if id(p) not in head]

    def roles(self):
        return {"body": self._body}

    def enable_update(self, on: bool) -> None:
        raise ValueError(_NO_BASE.format(what="ad.disable_adapter()"))

    def unload_model(self, merge: bool):
        if not merge:
            raise ValueError(_NO_BASE.format(what="ad.unload(merge=False)") + "; ad.unload(merge=True) returns the "
                             "trained model")
        return self.model

    def save(self, path) -> None:
        """Refused: an adapter file holds no base weights, and full fine-tuning's trained tensors are the whole model
        (``peftzoo.load`` of such a file would restore the head only)."""
        mb = sum(p.numel() * p.element_size() for p in self.trainable_parameters()) / 1e6
        raise NotImplementedError(
            f"full fine-tuning has no adapter file: its trained tensors are every weight of the model ({mb:.1f} MB "
            f"here), and an adapter file holds no base weights. Save the trained model instead, "
            f"ad.unload(merge=True).save_pretrained(path); `peftzoo analyze --finetuned path` reads it")

    @classmethod
    def count(cls, model, config):
        head = {id(p) for m in find_train(model, config).values() for p in m.parameters()}
        return sum(p.numel() for p in model.parameters() if id(p) not in head)


@register
class HeadOnly(_Baseline):
    name = "head"
    info = MethodInfo(equation="only the train modules (the classification head) trained", formula="0",
                      default_lr=1e-3, lr_grid=(3e-4, 1e-3, 3e-3, 1e-2), baseline=True)

    trains_head_only = True

    def roles(self):
        return {}

    def head(self) -> tuple[str, nn.Module]:
        """(name, module) of the head this baseline trains: its outermost ``train`` module (BERT's ``classifier``,
        after the pooler). Everything before the head's input is frozen, so that input is where a feature cache can
        stand (``bench.headfit``). Separate train modules are an error: one module's input caches not all of them."""
        mods = self.train_modules
        outer = {n: m for n, m in mods.items() if not any(n.startswith(o + ".") for o in mods)}
        if len(outer) != 1:
            raise ValueError(
                f"the head baseline trains {', '.join(map(repr, outer)) or 'no module'} "
                f"(train={list(self.config.train)}): "
                "a feature cache needs one head module whose input is the cached point; name it alone in train= "
                "(its full name, e.g. train=['classifier'] matches DistilBERT's pre_classifier too), or fit the head "
                "in the training loop (head_fit='steps')")
        return next(iter(outer.items()))

    @classmethod
    def count(cls, model, config):
        return 0

BASELINES = {c.name: c for c in (FullFinetune, HeadOnly)}
