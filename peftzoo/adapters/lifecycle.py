"""An adapter's life on its model, as free helpers over the ``Adapter`` contract (base.py calls them).

* ``disabled(ad)``: ``ad.disable_adapter()``, the base model's outputs inside a ``with`` block (PEFT's habit);
* ``unload(ad, merge)``: ``ad.unload(merge=...)``, the plain model back (PEFT's ``merge_and_unload``/``unload``),
  after which the adapter object refuses every use (``UnloadedAdapter``);
* ``hold(ad, model)``: the model carries ``ad`` (one adapter per model: ``refuse_second_adapter``), and a
  transformers model's ``save_pretrained`` writes plain weights (merged) or refuses, naming the fix (not merged),
  instead of keys ``from_pretrained`` does not read;
* ``CountMethod``: ``Cls.count(model, config)`` as before, and ``ad.count()`` on an adapter.

Each step asks the adapter (``merged``, ``unmerge``/``merge``, ``enable_update``, ``unload_model``, ``plain_view``):
nothing here knows a method.
"""
from __future__ import annotations

import contextlib
import functools
import types
from abc import ABC

import torch
from torch import nn
from transformers import PreTrainedModel

from peftzoo.inject import second_adapter_error


@contextlib.contextmanager
def disabled(ad):
    """The base model inside the block, the adapter as it was after it. A merged adapter is unmerged in place on
    entry and merged again on exit (weights equal to float rounding; no copy of them is made). Nested blocks are the
    outer one."""
    if ad._off:
        yield
        return
    was_merged = ad.merged
    if was_merged:
        ad.unmerge()
    ad.enable_update(False)
    ad._off = True
    try:
        yield
    finally:
        ad._off = False
        ad.enable_update(True)
        if was_merged:
            ad.merge()


def refuse_while_off(ad, what: str) -> None:
    if ad._off:
        raise RuntimeError(f"ad.{what}() inside `with ad.disable_adapter():`: the adapter is switched off there; "
                           f"call ad.{what}() after the block")


def unload(ad, merge: bool) -> nn.Module:
    """The model without the adapter: ΔW folded into the weights (merge) or the weights as before attaching."""
    if ad._off:
        raise RuntimeError("ad.unload() inside `with ad.disable_adapter():`: leave the block first")
    model = ad.unload_model(merge)
    release(ad)
    for p, flag in ad._grad_before:  # requires_grad as before attaching (the train modules keep their values)
        p.requires_grad_(flag)
    retire(ad, f"ad.unload(merge={merge})")
    return model


class UnloadedAdapter(ABC):  # an ABC: the layout of an Adapter, so an adapter's __class__ can become this one
    """What an adapter is after ``unload()``: it holds nothing (the model is free of it) and every use is an
    error saying so."""

    def __getattribute__(self, name):
        if name.startswith("__"):
            return object.__getattribute__(self, name)
        d = object.__getattribute__(self, "__dict__")
        raise RuntimeError(f"this {d['method']} adapter was unloaded ({d['how']}): it no longer belongs to a model, "
                           f"so ad.{name} has nothing to act on. Use the model unload() returned; to adapt it again, "
                           "peftzoo.attach(model, ...) or peftzoo.load(model, path)")

    def __repr__(self):
        d = object.__getattribute__(self, "__dict__")
        return f"<unloaded {d['method']} adapter ({d['how']})>"


def retire(ad, how: str) -> None:
    """Drop every reference the adapter holds and make any further use an error."""
    name = ad.name
    ad.__dict__.clear()
    ad.__dict__.update(method=name, how=how)
    ad.__class__ = UnloadedAdapter


# ---- the model carries the adapter; save_pretrained while attached ----------------------------------------------------
HELD = "_peftzoo_adapter"  # the attribute of the model an adapter was attached to (instance attributes: the class
# and other models are untouched; attach's transaction removes them on error; deepcopy and pickle follow the model)


def hold(ad, model: nn.Module) -> None:
    """Mark ``model`` as carrying ``ad`` until ``unload()``; route a transformers model's ``save_pretrained``
    (``push_to_hub`` calls it too) through ``ad`` when the adapter asks for it (``guards_save_pretrained``)."""
    ad._held = model
    setattr(model, HELD, ad)
    if ad.guards_save_pretrained and isinstance(model, PreTrainedModel):
        model.save_pretrained = ad._save_pretrained  # a bound method


def release(ad) -> None:
    model = ad.__dict__.pop("_held")
    model.__dict__.pop(HELD, None)
    model.__dict__.pop("save_pretrained", None)


def save_pretrained(ad, *args, **kwargs):
    """``model.save_pretrained`` while ``ad`` is attached."""
    model = ad._held
    if kwargs.get("state_dict") is None:  # an explicit state_dict is the caller's choice: written as given
        if not ad.merged:
            raise RuntimeError(unmerged_save_message(ad))
        with ad.plain_view():
            return type(model).save_pretrained(model, *args, **kwargs)
    return type(model).save_pretrained(model, *args, **kwargs)


def unmerged_save_message(ad) -> str:
    own = "ad.save(dir) / ad.save_peft(dir)" if type(ad).peft is not None else "ad.save(dir)"
    if not type(ad).merges:
        return (f"model.save_pretrained(): this model carries a {ad.name} adapter, whose update is no weight change "
                "(it cannot be merged), so the model's weights are the base model's alone and from_pretrained would "
                f"load no adapter. Keep the adapter with {own} and load it onto the base model (peftzoo.load / "
                "peftzoo.load_peft); ad.unload() gives the plain base model back")
    return (f"model.save_pretrained(): this model carries a {ad.name} adapter that is not merged, so its weights are "
            "not the adapted model's (from_pretrained would not load the update, and would initialise any wrapped "
            "layer's weights at random). Either ad.unload(merge=True) and save the model it returns (plain weights "
            f"with the update folded in), or ad.merge() first (then save_pretrained writes those plain weights), or "
            f"keep the adapter alone with {own} and load it onto the base model (peftzoo.load / peftzoo.load_peft)")


# ---- errors ---------------------------------------------------------------------------------------------------------
class _MergedBackward(torch.autograd.Function):
    """The identity whose backward raises ``MERGED_TRAINING``: a merged adapter in a training step."""

    @staticmethod
    def forward(ctx, x, anchor):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(MERGED_TRAINING)


def guard_merged(x: torch.Tensor, anchors) -> torch.Tensor:
    """``x`` (the output of a merged layer, or a base tensor) with a backward that raises the clear error, tied to the
    first trainable tensor of ``anchors`` so that backward reaches it; ``x`` itself when none is trainable. A forward
    alone (evaluating a merged model without eval()/no_grad) still works."""
    anchor = next((p for p in anchors if p is not None and p.requires_grad), None)
    return x if anchor is None else _MergedBackward.apply(x, anchor)


MERGED_TRAINING = ("the adapter is merged into the frozen weights (ad.merge()), so backward would give it no "
                   "gradient (torch's 'element 0 of tensors does not require grad', or the train modules trained "
                   "alone): call ad.unmerge() before training. For inference with the merged model use "
                   "model.eval() or torch.no_grad(); to train the merged model as a plain one, ad.unload(merge=True)")


# ---- count ----------------------------------------------------------------------------------------------------------
class CountMethod:
    """``Cls.count(model, config)``: the trainable elements attaching would give, without touching the model (a
    classmethod, as before); ``ad.count()`` on an adapter: the count attaching gave (taken on the model before
    attaching changed it). ``Adapter.__init_subclass__`` puts every method's ``count`` classmethod in one."""

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __get__(self, ad, owner):
        bound = types.MethodType(self.fn, owner)
        if ad is None:
            return bound

        def count(model=None, config=None):
            if model is None and config is None:
                return ad._count_at_attach
            if model is None or config is None:
                raise TypeError("count() takes no arguments (this adapter's own count) or both model and config "
                                f"(what attaching would give: {owner.__name__}.count(model, config))")
            return bound(model, config)
        return count


# ---- one adapter per model ------------------------------------------------------------------------------------------
class AdapterModule(nn.Module):
    """A module an adapter puts into (or around) a model: ``AdapterLayer``, DID/SAID's wrapper."""


def refuse_second_adapter(model: nn.Module) -> None:
    """One adapter per model: a model that holds (or is) an ``AdapterModule``, or a module an adapter was attached
    to, already carries one."""
    layers = [n or type(m).__name__ for n, m in model.named_modules() if isinstance(m, AdapterModule)]
    if layers:
        raise second_adapter_error(f"{len(layers)} adapter layers, e.g. {layers[0]!r}")
    held = [(n, vars(m)[HELD].name) for n, m in model.named_modules() if HELD in vars(m)]
    if held:
        name, method = held[0]
        raise second_adapter_error(f"a {method} adapter, attached to {repr(name) if name else 'this model'}")


# ---- the per-layer side ---------------------------------------------------------------------------------------------
class LayerLifecycle:
    """``AdapterLayer``'s part in ``disable_adapter()`` and ``unload()``, over its ``base``, ``merged``,
    ``state_tensors()``, ``delta_weight()``, ``merge()``/``unmerge()`` and ``set_base_weight``."""

    disabled: bool = False  # True inside ``disable_adapter()``: the frozen layer alone
    init_state: dict | None = None  # the initial tensors, when the init rewrote W (``remember_init``)

    def _stored(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` (laid out as ``base_weight()``) as the base stores its weight."""
        return (w.t() if self.fan_in_fan_out else w).to(self.base.weight.dtype).contiguous()

    def remember_init(self) -> None:
        """Called once after construction. When the init rewrote W (PiSSA, OLoRA leave a residual in it), keep the
        initial adapter tensors (the adapter's size, not W's), from which ``original_weight`` rebuilds W."""
        if self.__dict__.pop("_wrote_base", False):
            self.init_state = {k: v.detach().clone() for k, v in self.state_tensors().items()}

    @torch.no_grad()
    def _initial_delta(self) -> torch.Tensor:
        """ΔW at the initial tensors (the layer unmerged): W before attaching = the residual + this."""
        own = self.state_tensors()
        now = {k: t.data for k, t in own.items()}
        try:
            for k, t in own.items():
                t.data = self.init_state[k].to(device=t.device, dtype=t.dtype)
            return self.delta_weight()
        finally:
            for k, t in own.items():
                t.data = now[k]

    @torch.no_grad()
    def original_weight(self) -> torch.Tensor:
        """W as it was before attaching, laid out as ``base_weight()`` (the layer unmerged)."""
        w = self.base_weight()
        return w if self.init_state is None else w + self._initial_delta()

    @torch.no_grad()
    def switch(self, on: bool) -> None:
        """``disable_adapter()`` on an unmerged layer: off, the frozen layer as it was before attaching computes the
        output (an init's residual gets its initial part back in a new tensor; on restores the residual itself)."""
        if on == (not self.disabled):
            return
        if not on and self.init_state is not None:
            self._residual = self.base.weight.data
            self.base.weight.data = self._stored(self.original_weight())
        if on and "_residual" in self.__dict__:
            self.base.weight.data = self.__dict__.pop("_residual")
        self.disabled = not on

    @torch.no_grad()
    def unload(self, merge: bool) -> nn.Module:
        """The wrapped layer itself, holding W + ΔW (``merge``) or W as before attaching."""
        if merge:
            self.merge()
        else:
            self.unmerge()
            if self.init_state is not None:
                self.set_base_weight(self.original_weight())
        return self.base
