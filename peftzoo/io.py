"""Saving and loading adapters: peftzoo's own format and Hugging Face PEFT's, both directions.

Own format (a folder): ``adapter.safetensors`` (adapter tensors + ``train`` modules under ``train.``) and
``peftzoo.json`` (method, config, extra state, counts, and the base model: name or path, class, task, num_labels).
No base weights.

PEFT format: ``adapter_config.json`` + ``adapter_model.safetensors`` with keys ``base_model.model.<module>.<tensor>``,
which ``peft.PeftModel.from_pretrained`` loads; the ``train`` modules travel as ``modules_to_save``. ``save_peft``
writes ``task_type`` (PEFT's, from the model's class) and ``base_model_name_or_path``. ``load_peft`` reads a file
as PEFT 0.21.2 does:

* ``modules_to_save`` names that match no module are ignored (a SEQ_CLS file lists both ``classifier`` and
  ``score``); what was ignored is in ``ad.load_notes`` and logged (logger ``peftzoo.io``, level INFO);
* full weights of the input/output embeddings saved beside the adapter (PEFT's ``save_embedding_layers``, on by
  default when an embedding layer is a target) are copied into the model, as PEFT's load does;
* every other tensor must fit an adapter layer or a ``train`` module, and every option we do not implement is an
  error that names it.

What is method-specific in that format is the method's :class:`PeftCodec` (``Adapter.peft``; None for a method
without a PEFT equivalent): this module writes and reads the fields every PEFT file shares and asks the codec for
the rest.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from peftzoo import registry
from peftzoo._atomic import dumps, write_bytes
from peftzoo.inject import find_modules, transaction

if TYPE_CHECKING:
    from peftzoo.adapters.base import Adapter

FORMAT = 1
TRAIN = "train."
PEFT_PREFIX = "base_model.model."  # PEFT's key prefix: base_model.model.<module>.<tensor>
# PEFT features we do not implement: loading them silently would give different outputs.
# (fan_in_fan_out is not among them: PEFT sets it per layer from the layer's type, and so do we.)
# A method implements more of them when its codec lists them in ``options`` (LoRA: alpha_pattern).
PEFT_UNSUPPORTED = {"layers_to_transform": None, "layer_replication": None,
                    "target_parameters": None, "trainable_token_indices": None, "alpha_pattern": {},
                    "exclude_modules": None, "lora_bias": False, "use_qalora": False, "use_bdlora": None,
                    "alora_invocation_tokens": None, "arrow_config": None, "kasa_config": None,
                    "monteclora_config": None, "velora_config": None, "megatron_config": None}
# PEFT's task types told by the transformers auto class that lists a model's class, with the heads PEFT's model
# class for the task adds to modules_to_save (peft_model.py); other models get task_type None
TASKS = {"SEQ_CLS": ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", ("classifier", "score")),
         "TOKEN_CLS": ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", ("classifier", "score")),
         "QUESTION_ANS": ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", ("qa_outputs",)),
         "CAUSAL_LM": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", ()),
         "SEQ_2_SEQ_LM": ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", ())}
log = logging.getLogger(__name__)


class PeftCodec:
    """How one method's adapters are written in Hugging Face PEFT's format, both directions (``Adapter.peft``).

    ``save_peft`` writes the fields every PEFT file has (peft_type, task_type, inference_mode, modules_to_save,
    base_model_name_or_path), then ``fields(ad)`` (minus ``absent``), and ``state(ad)`` as the tensors;
    ``load_peft`` attaches the one method whose codec ``accepts`` the file with ``read(cfg)`` as its config, then
    ``load_state``. A per-layer method's codec is a ``peftzoo.adapters.layered.LayerCodec``.
    """

    peft_type: str = ""  # PEFT's peft_type for this method's files ("LORA")
    absent: tuple[str, ...] = ()  # fields of fields() that the method's PEFT config class lacks (PEFT warns on them)
    options: tuple[str, ...] = ()  # PEFT_UNSUPPORTED options the method implements (LoRA: alpha_pattern)
    prefix: str = PEFT_PREFIX  # where the file keeps the model's modules (the train modules): PEFT's tuners'
    # base_model.model.<module>; its prompt-learning methods' base_model.<module>

    def task(self, ad: Adapter) -> str | None:
        """The task_type to write (default: the model's, where PEFT's class for it loads the file exactly)."""
        return peft_task(ad)

    def accepts(self, cfg: dict) -> bool:
        """Whether this method reads the file whose adapter_config.json is ``cfg``."""
        return cfg.get("peft_type") == self.peft_type

    def to_peft(self, config) -> dict:
        """The method's hyperparameters (its config dataclass) as PEFT's config fields."""
        raise NotImplementedError

    def from_peft(self, cfg: dict) -> dict:
        """The inverse of ``to_peft``: our config fields from a PEFT config; an option we cannot honour raises,
        naming it."""
        raise NotImplementedError

    def fields(self, ad: Adapter) -> dict:
        """Every method-specific field of the adapter_config.json of ``ad`` (default: ``to_peft(ad.config)``)."""
        return self.to_peft(ad.config)

    def read(self, cfg: dict) -> dict:
        """The config to attach with (``train`` aside): ``from_peft(cfg)`` and whatever else the file decides."""
        return self.from_peft(cfg)

    def state(self, ad: Adapter) -> dict[str, torch.Tensor]:
        """The adapter's tensors under PEFT's keys (``base_model.model.<module>.<tensor>``)."""
        raise NotImplementedError

    def load_state(self, ad: Adapter, tensors: dict[str, torch.Tensor]) -> set[str]:
        """Copy the file's tensors into ``ad``; returns the keys used (the caller refuses any left over)."""
        raise NotImplementedError


def codec(ad: Adapter) -> PeftCodec:
    """The PEFT codec of ``ad``'s method, or an error saying it has none."""
    if type(ad).peft is None:
        raise NotImplementedError(f"{ad.name} has no Hugging Face PEFT equivalent; use ad.save() instead")
    return type(ad).peft


def copy_checked(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    """Copy ``src`` into ``dst`` or raise a ValueError naming the tensor and both shapes."""
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"adapter tensor {name!r} has shape {tuple(src.shape)} but the model needs "
                         f"{tuple(dst.shape)}: the adapter was made for a different model, or its config (r, "
                         f"rank_pattern, target_modules) does not describe its tensors")
    with torch.no_grad():
        dst.copy_(src.to(dtype=dst.dtype, device=dst.device))


def _attach(model, method: str, **config) -> Adapter:
    """The adapter of ``method`` on ``model`` (the caller holds the transaction that undoes it on error)."""
    return registry.get(method)(model, registry.make_config(method, **config))


def _write_json(path: Path, obj) -> None:
    """Strict, sorted, indented JSON, atomically (the adapter files' bytes as they always were: no final newline)."""
    write_bytes(path, dumps(obj).encode())


def _contiguous(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in d.items()}


def _train_tensors(ad: Adapter, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{m}.{k}": v for m, mod in ad.train_modules.items() for k, v in mod.state_dict().items()}


def _load_train(ad: Adapter, tensors: dict[str, torch.Tensor], prefix: str) -> set[str]:
    """Copy the ``train`` modules' tensors from the file; returns the keys used."""
    used = set()
    for m, mod in ad.train_modules.items():
        for k, v in mod.state_dict().items():
            key = f"{prefix}{m}.{k}"
            if key not in tensors:
                raise ValueError(f"adapter file lacks {key!r} of the fully trained module {m!r}")
            copy_checked(v, tensors[key], key)
            used.add(key)
    return used


def _check_all_used(tensors: dict, used: set, path) -> None:
    """Never ignore a tensor of the file: one that fits nowhere means the model or config differs from the saved."""
    left = sorted(set(tensors) - used)
    if left:
        raise ValueError(f"{path}: {len(left)} tensor(s) of the adapter file fit no adapter layer or train module "
                         f"of this model: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")


def _kept_modules(model, train) -> list:
    """The modules a load may write into (the train modules): restored if the load fails."""
    return list(find_modules(model, train).values()) if train else []


def save(ad: Adapter, path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {**ad.state(), **_train_tensors(ad, TRAIN)}
    save_file(_contiguous(tensors), str(path / "adapter.safetensors"))
    _write_json(path / "peftzoo.json", {"format": FORMAT, "method": ad.name, "config": ad.config.to_dict(),
                                        "extra": ad.extra_state(), "summary": ad.summary(),
                                        "base_model": base_model_info(ad.model)})


def load(model, path) -> Adapter:
    path = Path(path)
    if not (path / "peftzoo.json").exists():
        hint = " (it looks like a PEFT adapter: use peftzoo.load_peft)" if (path / "adapter_config.json").exists() else ""
        raise FileNotFoundError(f"{path} holds no peftzoo.json{hint}")
    meta = json.loads((path / "peftzoo.json").read_text())
    tensors = load_file(str(path / "adapter.safetensors"))
    try:
        with transaction(model, keep=_kept_modules(model, meta["config"].get("train"))):
            ad = _attach(model, meta["method"], **meta["config"])
            ad.load_extra_state(meta.get("extra", {}))
            own = {k: v for k, v in tensors.items() if not k.startswith(TRAIN)}
            ad.load_state(own)
            _check_all_used(tensors, set(own) | _load_train(ad, tensors, TRAIN), path)
    except ValueError as e:
        raise ValueError(f"{e}{_base_hint(meta.get('base_model'), model)}") from e
    return ad


def _hf_model(model):
    """The outermost transformers ``PreTrainedModel`` in ``model`` (itself, or the one a whole-model method wraps)."""
    from transformers import PreTrainedModel
    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)


def task_type(model) -> str | None:
    """PEFT's task_type of a transformers model: the task whose auto class lists the model's class (or a base class
    of it), e.g. "SEQ_CLS" for a ``...ForSequenceClassification``; None for other models."""
    from transformers.models.auto import modeling_auto
    hf = _hf_model(model)
    if hf is None:
        return None
    names = {c.__name__ for c in type(hf).__mro__ if c.__module__.startswith("transformers.")}
    return next((t for t, (m, _) in TASKS.items() if names & set(getattr(modeling_auto, m).values())), None)


def base_model_info(model) -> dict:
    """What a saved adapter records of its base model: ``name_or_path`` (transformers' ``config._name_or_path``: what
    was given to ``from_pretrained``, '' for a model built from a config, saved as None), its class, PEFT's task type
    and, for a classifier, ``num_labels``."""
    hf = _hf_model(model)
    if hf is None:
        return {"name_or_path": None, "class": type(model).__name__}
    task = task_type(hf)
    info = {"name_or_path": getattr(hf.config, "name_or_path", None) or None, "class": type(hf).__name__,
            "task_type": task}
    if task in ("SEQ_CLS", "TOKEN_CLS"):
        info["num_labels"] = hf.config.num_labels
    return info


def _base_hint(saved: dict | None, model) -> str:
    """For a load error: how the base the adapter was saved on differs from ``model`` ('' where it does not)."""
    now = base_model_info(model)
    diff = {k: v for k, v in (saved or {}).items() if v is not None and now.get(k) != v}
    if not diff:
        return ""
    what = "; ".join(f"{k}={v!r} (this model: {now.get(k)!r})" for k, v in diff.items())
    fix = (f": load the base with from_pretrained(..., num_labels={diff['num_labels']})" if "num_labels" in diff
           else "")
    return f" [the adapter was saved on a base model with {what}{fix}]"


def peft_task(ad: Adapter) -> str | None:
    """The task_type to write: the model's, where PEFT's model class for it loads the file exactly. That class wraps
    every module named like its heads (``classifier``, ``score``; ``qa_outputs``) as modules_to_save, needs their
    tensors in the file and adapts nothing inside them; so a head that is not a ``train`` module, or one holding an
    adapted layer (RoBERTa's ``classifier.dense`` under all-linear), means no task type (PEFT's plain PeftModel)."""
    task, hf = task_type(ad.model), _hf_model(ad.model)  # the transformers model (a whole-model method wraps it)
    heads = TASKS[task][1] if task else ()
    named = [n for n, _ in hf.named_modules() if n and n.endswith(heads)] if heads else []
    if any(n not in ad.train_modules or _under_any(ad.layers, n) for n in named):
        return None
    return task


def _under_any(names, prefix: str) -> bool:
    return any(n == prefix or n.startswith(prefix + ".") for n in names)


def save_peft(ad: Adapter, path) -> None:
    c = codec(ad)
    cfg = {"peft_type": c.peft_type, "task_type": c.task(ad), "inference_mode": True,
           "modules_to_save": list(ad.config.train) or None,
           "base_model_name_or_path": base_model_info(ad.model)["name_or_path"], **c.fields(ad)}
    for key in c.absent:
        cfg.pop(key, None)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)  # after the codec, which may refuse: no empty folder left
    tensors = {**c.state(ad), **_train_tensors(ad, c.prefix)}
    save_file(_contiguous(tensors), str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    _write_json(path / "adapter_config.json", cfg)


def _peft_method(cfg: dict, path: Path) -> type:
    """The one method class that reads this PEFT config, or an error naming the type and the options given."""
    codecs = [c for c in registry.REGISTRY.values() if c.peft is not None]
    matches = [c for c in codecs if c.peft.accepts(cfg)]
    if not matches:
        known = sorted({c.peft.peft_type for c in codecs})
        raise ValueError(f"{path}: PEFT adapter type {_peft_kind(cfg)} is not supported by peftzoo; supported PEFT "
                         f"types: {', '.join(known)}")
    return matches[0]


def _peft_kind(cfg: dict) -> str:
    """The PEFT type and its variant flags, as a message names them: 'LORA' (use_dora=True, use_rslora=True)."""
    flags = ", ".join(f"{k}={cfg[k]!r}" for k in ("use_dora", "use_rslora") if cfg.get(k))
    return f"{cfg.get('peft_type')!r}" + (f" ({flags})" if flags else "")


def _check_supported(cfg: dict, cls: type, path: Path) -> None:
    """Refuse, by name, every option of the file that the method would have to ignore (outputs would differ)."""
    for key, default in PEFT_UNSUPPORTED.items():
        if key not in cls.peft.options and cfg.get(key, default) not in (default, None, {}, [], False):
            raise ValueError(f"{path}: PEFT adapter {_peft_kind(cfg)} uses {key}={cfg[key]!r}, which peftzoo does "
                             f"not support (loading it without would give different outputs)")
    if cfg.get("bias", "none") != "none":
        raise ValueError(f"{path}: PEFT adapter trains biases (bias={cfg['bias']!r}), which peftzoo does not support")


def _modules_to_save(model, cfg: dict) -> tuple[list[str], list[str]]:
    """The file's modules_to_save split into the names that match a module (a name suffix: PEFT's rule) and those that
    match none, which PEFT ignores (its SEQ_CLS model class lists both 'classifier' and 'score')."""
    names = [n for n, _ in model.named_modules() if n]
    wanted = list(dict.fromkeys(cfg.get("modules_to_save") or []))
    found = [t for t in wanted if any(n.endswith(t) for n in names)]
    return found, [t for t in wanted if t not in found]


def _embedding_modules(model) -> dict:
    """A transformers model's input and output embeddings by name: the modules whose full weights PEFT's
    ``save_embedding_layers`` saves beside the adapter."""
    from transformers import PreTrainedModel
    if not isinstance(model, PreTrainedModel):
        return {}
    found = []
    for get in (model.get_input_embeddings, model.get_output_embeddings):
        try:
            found.append(get())
        except (NotImplementedError, AttributeError):
            pass
    ids = {id(m) for m in found if m is not None}
    return {n: m for n, m in model.named_modules() if id(m) in ids}


def _embedding_keys(name: str, mod, adapted: bool) -> dict:
    """file key -> tensor of the embedding ``name``'s weights as PEFT saves them: ``<name>.weight``, or
    ``<name>.base_layer.weight`` when the embedding is an adapted layer (PEFT's wrapper holds it as base_layer)."""
    where = f"{name}.base_layer" if adapted else name
    return {f"{PEFT_PREFIX}{where}.{k}": t for k, t in mod.state_dict().items()}


def _load_embeddings(ad: Adapter, embeddings: dict, tensors: dict, path: Path) -> set[str]:
    """Copy the embedding weights the file holds into the model, as PEFT's load does; returns the keys used."""
    used = set()
    for name, mod in embeddings.items():
        for key, t in _embedding_keys(name, mod, name in ad.layers).items():
            if key not in tensors:
                continue
            src = tensors[key]
            if tuple(src.shape) != tuple(t.shape):
                raise ValueError(f"{path}: the file holds the full weights of {name!r} ({key!r}, saved by PEFT's "
                                 f"save_embedding_layers) with shape {tuple(src.shape)}, but the model's are "
                                 f"{tuple(t.shape)}: the vocabulary was resized when the adapter was trained; call "
                                 f"model.resize_token_embeddings({src.shape[0]}) before loading")
            copy_checked(t, src, key)
            used.add(key)
    return used


def _notes(cfg: dict, ignored: list[str], embedded: set[str]) -> tuple[str, ...]:
    """What ``load_peft`` did beyond loading adapter tensors, as ``ad.load_notes`` says it (and the log)."""
    notes = [f"modules_to_save {ignored} match no module of the model: ignored, as PEFT ignores them "
             f"(task_type={cfg.get('task_type')!r})"] if ignored else []
    if embedded:
        notes.append(f"copied the full weights {sorted(k.removeprefix(PEFT_PREFIX) for k in embedded)} saved beside "
                     "the adapter (PEFT's save_embedding_layers) into the model, as PEFT's load does")
    return tuple(notes)


def load_peft(model, path) -> Adapter:
    path = Path(path)
    cfg = json.loads((path / "adapter_config.json").read_text())
    cls = _peft_method(cfg, path)
    _check_supported(cfg, cls, path)
    train, ignored = _modules_to_save(model, cfg)
    tensors = load_file(str(path / "adapter_model.safetensors"))
    tensors = {k.replace(".default.", ".").removesuffix(".default"): v for k, v in tensors.items()}
    embeddings = _embedding_modules(model)
    written = [m for n, m in embeddings.items()
               if any(k in tensors for adapted in (False, True) for k in _embedding_keys(n, m, adapted))]
    try:
        with transaction(model, keep=_kept_modules(model, train) + written):
            ad = _attach(model, cls.name, train=train, **cls.peft.read(cfg))
            embedded = _load_embeddings(ad, embeddings, tensors, path)  # before the layers: DoRA caches W's norms
            used = embedded | cls.peft.load_state(ad, tensors)
            _check_all_used(tensors, used | _load_train(ad, tensors, cls.peft.prefix), path)
    except ValueError as e:
        raise ValueError(f"{e}{_base_hint({'name_or_path': cfg.get('base_model_name_or_path')}, model)}") from e
    ad.load_notes = _notes(cfg, ignored, embedded)
    for note in ad.load_notes:
        log.info("%s: %s", path, note)
    return ad
