"""The generic Adapter for per-layer methods: wraps every target layer in the method's AdapterLayer for its type.

A method supplies ``layer_classes``, a map from the layer types it adapts to its AdapterLayer class for each
(``{nn.Linear: LoraLayer, nn.Embedding: LoraEmbedding, ...}``: a new layer type is one new class and one entry),
and, for state shared across layers such as VeRA's projections, ``make_shared``; everything else (injection,
counting, state, merge) is answered here once, and PEFT's file format by :class:`LayerCodec` (a method's codec
adds its hyperparameters: ``to_peft`` / ``from_peft``).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from peftzoo.adapters import lifecycle
from peftzoo.adapters.base import Adapter, AdapterConfig, count_train, find_train
from peftzoo.adapters.layer import AdapterLayer
from peftzoo.inject import find_targets, replace_module, resolve_targets
from peftzoo.io import PEFT_PREFIX, PeftCodec, copy_checked


class LayerAdapter(Adapter):
    layer_classes: ClassVar[dict[type, type[AdapterLayer]]]  # layer type adapted -> its AdapterLayer class

    def __init__(self, model: nn.Module, config: AdapterConfig):
        super().__init__(model, config)
        config.targets = resolve_targets(model, config.targets, self.defaults_key())  # None: the model's default
        self.validate(config)
        train = find_train(model, config)
        targets = self.find(model, config, train)
        for name, lin in targets.items():
            self.layer_class(lin).check(name, lin, self.layer_config(config, name))
        _warn_rank({n: (self.layer_class(m).rank(self.layer_config(config, n)), self.layer_class(m).dims(m))
                    for n, m in targets.items()})
        _warn_tied(model, targets)
        self.shared = self.make_shared(targets, config)
        self.freeze_base(train)
        gen = torch.Generator().manual_seed(config.seed)
        self.layers: dict[str, AdapterLayer] = {}
        for name, lin in targets.items():
            layer = self.layer_class(lin)(name, lin, self.layer_config(config, name), self.shared, gen)
            layer.remember_init()
            layer.train(lin.training)  # the mode of the layer it wraps (a new module starts in train mode)
            replace_module(model, name, layer)
            self.layers[name] = layer

    @classmethod
    def layer_class(cls, module: nn.Module) -> type[AdapterLayer]:
        """The AdapterLayer class for ``module``: its own type's entry, else its nearest base class's."""
        return next(cls.layer_classes[t] for t in type(module).__mro__ if t in cls.layer_classes)

    @classmethod
    def defaults_key(cls) -> str:
        """The PEFT type whose default targets per architecture this method takes (defaults.py; "": LoRA's)."""
        return cls.peft.peft_type if cls.peft is not None else ""

    @classmethod
    def find(cls, model: nn.Module, config: AdapterConfig, train: dict) -> dict[str, nn.Module]:
        return find_targets(model, config.targets, skip=train, layer_types=(AdapterLayer,),
                            base_types=tuple(cls.layer_classes), method=cls.name, peft_type=cls.defaults_key())

    @torch.no_grad()
    def initialize(self) -> None:
        """Run the adapter's initialisation again (same seed, same values as attaching to the model as it is now).

        For a model attached on the ``meta`` device: ``model.to_empty(device=...)``, load the base weights, then
        ``ad.initialize()``; DoRA's magnitude is computed from the loaded W here.
        """
        targets = {n: layer.base for n, layer in self.layers.items()}
        shared = self.make_shared(targets, self.config)
        gen = torch.Generator().manual_seed(self.config.seed)
        for name, layer in self.layers.items():
            fresh = self.layer_class(layer.base)(name, layer.base, self.layer_config(self.config, name), shared, gen)
            fresh.remember_init()
            layer.init_state = fresh.init_state
            mine = {**dict(layer.named_parameters()), **dict(layer.named_buffers())}
            for k, t in [*fresh.named_parameters(), *fresh.named_buffers()]:
                if not k.startswith("base."):
                    mine[k].copy_(t)
            layer.merged = False

    # ---- hooks a method may override ------------------------------------------------------------------------
    @classmethod
    def validate(cls, config: AdapterConfig) -> None:
        """Reject bad hyperparameters before touching the model."""

    @classmethod
    def layer_config(cls, config: AdapterConfig, name: str) -> AdapterConfig:
        """The config the layer ``name`` is built with (LoRA: r and alpha from its rank/alpha pattern)."""
        return config

    @classmethod
    def make_shared(cls, targets: dict[str, nn.Module], config: AdapterConfig) -> Any:
        """State shared by all layers (VeRA's frozen projections); None for most methods."""
        return None

    # ---- the contract -----------------------------------------------------------------------------------------
    @classmethod
    def count(cls, model: nn.Module, config: AdapterConfig) -> int:
        cls.validate(config)
        train = find_train(model, config)
        targets = cls.find(model, config, train)
        n = 0
        for name, lin in targets.items():
            cls.layer_class(lin).check(name, lin, cls.layer_config(config, name))
            n += cls.layer_class(lin).count_layer(name, lin, cls.layer_config(config, name))
        return n + count_train(train)

    @classmethod
    def rank_fits(cls, model: nn.Module, config: AdapterConfig) -> bool:
        """False when the rank exceeds min(d_in, d_out) of a target: allowed, but a budget gains nothing from it."""
        train = find_train(model, config)
        for n, m in cls.find(model, config, train).items():
            r = cls.layer_class(m).rank(cls.layer_config(config, n))
            if r is not None and r > min(cls.layer_class(m).dims(m)):
                return False
        return True

    def roles(self) -> dict[str, list[nn.Parameter]]:
        out: dict[str, list[nn.Parameter]] = {}
        for layer in self.layers.values():
            for role, ps in layer.roles().items():
                out.setdefault(role, []).extend(ps)
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{n}.{k}": v.detach() for n, layer in self.layers.items() for k, v in layer.state_tensors().items()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        _check_keys(set(self.state()), set(tensors))
        for n, layer in self.layers.items():
            for k, v in layer.state_tensors().items():
                copy_checked(v, tensors[f"{n}.{k}"], f"{n}.{k}")
            layer.after_load()

    def merge(self) -> None:
        lifecycle.refuse_while_off(self, "merge")
        for layer in self.layers.values():
            layer.merge()

    def unmerge(self) -> None:
        lifecycle.refuse_while_off(self, "unmerge")
        for layer in self.layers.values():
            layer.unmerge()

    @property
    def merged(self) -> bool:
        return any(layer.merged for layer in self.layers.values())

    def enable_update(self, on: bool) -> None:
        for layer in self.layers.values():
            layer.switch(on)

    def unload_model(self, merge: bool) -> nn.Module:
        for name, layer in self.layers.items():
            replace_module(self.model, name, layer.unload(merge))
        return self.model

    @contextlib.contextmanager
    def plain_view(self):
        """The wrapped layers replaced by their own (merged) layers inside the block: the unloaded model's view."""
        for name, layer in self.layers.items():
            replace_module(self.model, name, layer.base)
        try:
            yield
        finally:
            for name, layer in self.layers.items():
                replace_module(self.model, name, layer)



class LayerCodec(PeftCodec):
    """PEFT's format of a per-layer method: ``target_modules`` (the exact modules adapted when the targets are a
    regex or "all-linear"), ``fan_in_fan_out`` and ``bias``, and each wrapped layer's tensors
    (``AdapterLayer.peft_state``) under ``base_model.model.<layer>.``. A method's subclass adds its own fields."""

    def fields(self, ad) -> dict:
        targets = ad.config.targets
        if not isinstance(targets, (list, tuple)):  # regex or all-linear: write the exact modules adapted
            targets = "^(" + "|".join(n.replace(".", r"\.") for n in ad.layers) + ")$"
        conv1d = any(layer.fan_in_fan_out for layer in ad.layers.values())
        return {"bias": "none", "fan_in_fan_out": conv1d,
                "target_modules": list(targets) if isinstance(targets, (list, tuple)) else targets,
                **self.to_peft(ad.config)}

    def read(self, cfg: dict) -> dict:
        if "target_modules" not in cfg:
            raise ValueError(f"PEFT {cfg.get('peft_type')} adapter has no target_modules: PEFT fills them from a "
                             "per-architecture table when it builds the model; set target_modules in "
                             "adapter_config.json")
        targets = cfg["target_modules"]
        return {"targets": targets if isinstance(targets, str) else sorted(targets), **self.from_peft(cfg)}

    def state(self, ad) -> dict[str, torch.Tensor]:
        return {f"{PEFT_PREFIX}{n}.{k}": v for n, layer in ad.layers.items() for k, v in layer.peft_state().items()}

    def load_state(self, ad, tensors: dict[str, torch.Tensor]) -> set[str]:
        used = set()
        for n, layer in ad.layers.items():
            p = f"{PEFT_PREFIX}{n}."
            try:
                layer.load_peft_state({k[len(p):]: v for k, v in tensors.items() if k.startswith(p)})
            except ValueError as e:
                raise ValueError(f"layer {n!r}: {e}") from None
            layer.after_load()
            used |= {p + k for k in layer.peft_state()}
        return used


def _check_keys(expected: set, got: set) -> None:
    missing, extra = sorted(expected - got), sorted(got - expected)
    if missing or extra:
        raise ValueError(f"adapter file does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}")


def _warn_rank(ranks: dict[str, tuple[int | None, tuple[int, int]]]) -> None:
    """PEFT accepts a rank above min(d_in, d_out); so do we, with a note that the update's rank is capped there.
    ``ranks``: layer name -> (its rank or None, its (d_in, d_out))."""
    over = [(n, r, d) for n, (r, d) in ranks.items() if r is not None and r > min(d)]
    if over:
        n, r, (di, do) = over[0]
        warnings.warn(f"rank {r} exceeds min(d_in, d_out) on {len(over)} layer(s), e.g. {n!r} ({di}->{do}): "
                      "their update has rank at most min(d_in, d_out) and some trained elements are redundant "
                      "(accepted, as PEFT does)", stacklevel=4)


def _warn_tied(model: nn.Module, targets: dict[str, nn.Module]) -> None:
    """A target whose weight another module shares (an input embedding tied to the output layer): the adapter
    changes that target's output only, as PEFT does without ``ensure_weight_tying``, but ``merge()`` writes into the
    shared weight, so after it the other modules change too (PEFT warns the same)."""
    owners: dict[int, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        for p in m.parameters(recurse=False):
            owners.setdefault(id(p), []).append(n)
    for name, mod in targets.items():
        others = [o for o in owners.get(id(getattr(mod, "weight", None)), []) if o != name]
        if others:
            warnings.warn(f"target {name!r} shares its weight with {', '.join(map(repr, others))} (tied weights): "
                          f"the adapter changes {name!r} only, but merge() writes into the shared weight and so also "
                          f"changes {others[0]!r}; outputs after merge() differ from the adapted model's", stacklevel=4)
