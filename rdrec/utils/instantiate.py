"""Build objects from config: lists of them (callbacks, loggers), and one object that is handed only the run-time
arguments its constructor declares (a model states what it needs from the data in its signature, as RecBole's
models do), so constructors need no catch-all ``**kwargs`` and a key nobody takes is an error."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

# Hydra's own keys in a node with a `_target_`: never constructor arguments
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


def instantiate_list(group: DictConfig | None) -> list:
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def declared_params(target: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword parameters ``target`` (a class or a function) declares, and whether it takes any keyword at all.

    A class's ``__init__`` that forwards ``**kwargs`` to its parent declares the parent's parameters too: they are
    collected along the MRO until an ``__init__`` without ``**kwargs``. ``open`` is True when the chain never
    closes (a ``**kwargs`` that reaches no signature), in which case no key can be called unknown.
    """
    if inspect.isclass(target):
        inits = [k.__dict__["__init__"] for k in target.__mro__ if "__init__" in k.__dict__ and k is not object]
    else:
        inits = [target]
    params: dict[str, inspect.Parameter] = {}
    for init in inits:
        try:
            signature = inspect.signature(init)
        except (TypeError, ValueError):  # a builtin without a signature: anything goes
            return params, True
        var_keyword = False
        for i, (name, p) in enumerate(signature.parameters.items()):
            if inspect.isclass(target) and i == 0:
                continue  # self
            if p.kind is p.VAR_KEYWORD:
                var_keyword = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params.setdefault(name, p)
        if not var_keyword:
            return params, False
    return params, True


def target_of(node: DictConfig) -> Callable:
    """The class or function ``node._target_`` names; a failed import raises without Hydra's multi-line error log
    (the caller reports it in one line)."""
    log = logging.getLogger("hydra.utils")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return get_object(node._target_)
    finally:
        log.setLevel(level)


def instantiate_declared(node: DictConfig, **provided: Any) -> Any:
    """``instantiate(node, **provided)``, passing only the provided arguments that the target declares."""
    params, open_ = declared_params(target_of(node))
    return instantiate(node, **{k: v for k, v in provided.items() if open_ or k in params})
