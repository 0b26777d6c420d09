"""Config checks the entry points run before any work: a key nobody takes, or a value that cannot work, stops the
run with one line (``rdrec.errors.ConfigError``) naming the key, the config file it comes from and what is accepted.

- ``check_config(cfg)``, before the datamodule does anything: every node with a ``_target_`` under ``data``,
  ``strategy`` and ``eval`` (nested ones too: ``data.source``, ``strategy.optimizer``, ``strategy.model`` …) holds
  only keys its target's constructor declares (collected along the MRO through ``**kwargs``); the keys the entry
  point hands the strategy itself (``RUN_ARGS``) are not config keys. The ``eval`` group and the datamodule's
  sizes are dataclass schemas (``EvalConfig``, ``DataSizes``): types and bounds come from their fields.
  ``eval.monitor`` must be a key the strategy logs during validation (its ``monitorable_keys``).
- ``check_data_sizes(cfg, datamodule)``, after the datamodule's setup and before the trainer is built: the
  bounds that need the data (``eval.ks`` ≤ number of items, ``data.eval_users`` ≤ number of users).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rdrec.errors import ConfigError
from rdrec.utils.instantiate import HYDRA_KEYS, declared_params, target_of
from rdrec.utils.resolvers import CONFIG_DIR

# what rdrec-train hands a strategy's constructor (only those it declares): from the data and the eval group
RUN_ARGS = frozenset({"num_items", "num_users", "protocols", "ks", "mrr_k"})


# ---- schemas ---------------------------------------------------------------------------------------------------
class MonitorMode(enum.Enum):
    max = "max"
    min = "min"


@dataclass
class CandidateListConfig:
    """One persisted candidate list (``eval.candidate_lists.<name>``, docs/protocol.md)."""

    kind: str = MISSING  # sampled | shown | sr_topk (DELRec)
    size: int = field(default=MISSING, metadata={"min": 1})
    strategy: str = "uniform"  # uniform | popularity
    n_sr: Optional[int] = field(default=None, metadata={"min": 0})  # sr_topk: how many of the SR model's top items
    sr_run: Optional[str] = None  # sr_topk: the SR run whose topk/ builds the lists (default: data.candidate_sr_run)


@dataclass
class EvalConfig:
    """The ``eval`` group (conf/eval/default.yaml explains each key)."""

    ks: List[int] = field(default_factory=lambda: [1, 5, 10, 20], metadata={"min": 1, "nonempty": True})
    mrr_k: Optional[int] = field(default=None, metadata={"min": 1})
    exclude_seen: bool = True
    monitor: Optional[str] = "val/ndcg@10"
    monitor_mode: MonitorMode = MonitorMode.max
    protocols: Dict[str, Any] = field(default_factory=dict)  # name -> a protocol with `_target_`, or null
    candidate_lists: Dict[str, Optional[CandidateListConfig]] = field(default_factory=dict)


@dataclass
class DataSizes:
    """The sizes every datamodule takes (``rdrec.data.datamodule.SeqRecDataModule``)."""

    batch_size: int = field(default=1, metadata={"min": 1})
    eval_batch_size: int = field(default=1, metadata={"min": 1})
    max_len: int = field(default=1, metadata={"min": 1})
    eval_users: Optional[int] = field(default=None, metadata={"min": 1})


# ---- entry points ----------------------------------------------------------------------------------------------
def check_config(cfg: DictConfig, nodes=("data", "strategy", "eval"), primary: str = "train") -> None:
    """Raise ``ConfigError`` for the first unknown key or impossible value under ``nodes`` (before any work).

    ``eval`` is checked against ``EvalConfig``; any other node names an object with a ``_target_`` (absent or null
    nodes are skipped). ``primary``: the entry point's config (conf/<primary>.yaml), for naming files."""
    origin = _Origins(cfg, primary)
    evaluation = None
    for path in nodes:
        if path == "eval":
            evaluation = _check_schema(cfg.eval, "eval", EvalConfig, origin)
            for name in evaluation.protocols:
                if cfg.eval.protocols[name] is not None:
                    _check_node(cfg.eval.protocols[name], f"eval.protocols.{name}", origin)
            continue
        node = OmegaConf.select(cfg, path, throw_on_missing=False)
        if node is None:
            continue
        _check_node(node, path, origin, run_args=RUN_ARGS if path == "strategy" else frozenset())
        if path == "data":
            _check_schema(cfg.data, "data", DataSizes, origin, only_known=True)
    if evaluation is not None and "strategy" in nodes:
        _check_monitor(cfg, evaluation, origin)


def check_data_sizes(cfg: DictConfig, datamodule) -> None:
    """Raise ``ConfigError`` for bounds that need the data: call after ``datamodule.setup()``."""
    origin = _Origins(cfg, "train")
    too_big = [k for k in cfg.eval.ks if k > datamodule.num_items]
    if too_big:
        raise ConfigError(f"eval.ks: expected values ≤ the number of items ({datamodule.num_items}), got "
                          f"{too_big[0]} in {list(cfg.eval.ks)}{origin.where('eval.ks')}")
    users = cfg.data.get("eval_users")
    if users is not None and users > datamodule.num_users:
        raise ConfigError(f"data.eval_users: expected at most the number of users ({datamodule.num_users}) or null "
                          f"(all), got {users}{origin.where('data.eval_users')}")


# ---- unknown keys ------------------------------------------------------------------------------------------------
def _check_node(node: DictConfig, path: str, origin: _Origins, source: str | None = None,
                run_args: frozenset = frozenset()) -> None:
    """``node`` has a ``_target_``: every key must be a parameter its target declares; recurse into nested targets.
    ``source`` is where the node lives in the composed config (``seqrec`` for ``strategy.model: ${seqrec}``)."""
    source = source or path
    if "_target_" not in node:
        raise ConfigError(f"{path}: expected a `_target_` (the class or function it builds){origin.where(source)}")
    try:
        target = target_of(node)
    except Exception as err:  # ImportError, AttributeError, … from the import: the name is what matters
        raise ConfigError(f"{path}._target_: cannot import {node._target_!r} "
                          f"({type(err).__name__}){origin.where(source + '._target_')}") from None
    params, open_ = declared_params(target)
    accepted = sorted(set(params) - run_args)
    for key in node.keys():
        key = str(key)
        if key in HYDRA_KEYS:
            continue
        if key in run_args:
            raise ConfigError(f"{path}.{key}: set by the run from the data and the eval group, not a config key"
                              f"{origin.where(f'{source}.{key}')}")
        if not open_ and key not in params:
            raise ConfigError(f"unknown key {path}.{key}{origin.where(f'{source}.{key}')}: {node._target_} accepts "
                              f"{', '.join(accepted) or 'no keys'}")
        if OmegaConf.is_missing(node, key):
            raise ConfigError(f"{path}.{key}: a value is required (the config leaves it `???`)"
                              f"{origin.where(f'{source}.{key}')}")
        child, child_source = _child(node, key, source)
        if isinstance(child, DictConfig) and "_target_" in child:
            _check_node(child, f"{path}.{key}", origin, child_source)
    if not open_ and not node.get("_partial_", False):
        for name, p in params.items():
            if p.default is p.empty and name not in node.keys() and name not in run_args:
                raise ConfigError(f"{path}.{name}: required by {node._target_}, not set{origin.where(source)}")


def _child(node: DictConfig, key: str, source: str) -> tuple[Any, str]:
    """The value under ``key`` (interpolations resolved; None when it cannot be resolved yet) and where it lives."""
    child_source = f"{source}.{key}"
    if OmegaConf.is_interpolation(node, key):
        raw = OmegaConf.to_container(node, resolve=False)[key]
        match = re.fullmatch(r"\$\{([\w.]+)\}", raw)
        child_source = match.group(1) if match else child_source
    try:
        return node[key], child_source
    except OmegaConfBaseException:  # a mandatory value (???) or a resolver only a running job has
        return None, child_source


# ---- schemas: types and bounds -------------------------------------------------------------------------------------
def _check_schema(node: DictConfig, path: str, schema: type, origin: _Origins, only_known: bool = False):
    """Validate ``node`` against a dataclass schema: unknown keys (unless ``only_known``: then only the schema's
    keys are read), types (OmegaConf), bounds (``min`` / ``nonempty`` in the field metadata)."""
    names = [f.name for f in dataclasses.fields(schema)]
    if not only_known:
        _no_unknown(node, path, names, origin, schema.__name__)
    values = {}
    for name in names:
        if name in node:
            values[name] = _resolved(node, name, path, origin)
    if schema is EvalConfig:
        for name, spec in (values.get("candidate_lists") or {}).items():
            if spec is not None:
                _no_unknown(spec, f"{path}.candidate_lists.{name}",
                            [f.name for f in dataclasses.fields(CandidateListConfig)], origin, "a candidate list")
    try:
        checked = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except OmegaConfBaseException as err:
        key = f"{path}.{err.full_key}" if getattr(err, "full_key", None) else path
        message = str(err.msg if hasattr(err, "msg") else err).splitlines()[0]
        listed = re.sub(r"\[\d+\]$", "", key)  # eval.ks[1] is set where eval.ks is
        raise ConfigError(f"{key}: {message}{origin.where(listed)}") from None
    _check_bounds(checked, path, origin)
    return checked


def _resolved(node: DictConfig, key: str, path: str, origin: _Origins) -> Any:
    try:
        value = node[key]
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}.{key}: {str(err).splitlines()[0]}{origin.where(f'{path}.{key}')}") from None
    if isinstance(value, (DictConfig,)) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True, throw_on_missing=False)
    return value


def _no_unknown(node, path: str, names: list[str], origin: _Origins, what: str) -> None:
    for key in node.keys():
        if key not in names:
            raise ConfigError(f"unknown key {path}.{key}{origin.where(f'{path}.{key}')}: {what} accepts "
                              f"{', '.join(names)}")


def _check_bounds(obj: Any, path: str, origin: _Origins) -> None:
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{path}.{f.name}"
        if dataclasses.is_dataclass(value):
            _check_bounds(value, key, origin)
        elif isinstance(value, dict):
            for name, item in value.items():
                if dataclasses.is_dataclass(item):
                    _check_bounds(item, f"{key}.{name}", origin)
        if f.metadata.get("nonempty") and not value:
            raise ConfigError(f"{key}: expected at least one value, got {value!r}{origin.where(key)}")
        low = f.metadata.get("min")
        if low is not None and value is not None:
            bad = [v for v in (value if isinstance(value, list) else [value]) if v < low]
            if bad:
                expected = "positive integers" if isinstance(value, list) else f"an integer ≥ {low}"
                expected = "a positive integer" if expected == "an integer ≥ 1" else expected
                null = " or null" if f.default is None else ""
                raise ConfigError(f"{key}: expected {expected}{null}, got {value!r}{origin.where(key)}")


# ---- eval.monitor ------------------------------------------------------------------------------------------------
def _check_monitor(cfg: DictConfig, evaluation: EvalConfig, origin: _Origins) -> None:
    if evaluation.monitor is None:
        return
    strategy = target_of(cfg.strategy)
    keys_of = getattr(strategy, "monitorable_keys", None)
    if keys_of is None:
        return  # a strategy that does not say what it logs
    protocols = {name: instantiate(spec) for name, spec in cfg.eval.protocols.items() if spec is not None}
    keys = keys_of(protocols, list(evaluation.ks), evaluation.mrr_k)
    if evaluation.monitor not in keys:
        raise ConfigError(f"eval.monitor: {evaluation.monitor!r} is never logged by this run{origin.where('eval.monitor')}; "
                          f"expected one of {', '.join(sorted(keys, key=_natural)) or 'nothing (no protocol)'}")


def _natural(key: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key))


# ---- where a key comes from ----------------------------------------------------------------------------------------
class _Origins:
    """Names the config file (or the command line) that sets a dotted key, from Hydra's runtime choices: the files
    of the chosen options and the ones their defaults lists pull in, each read as YAML at its package."""

    def __init__(self, cfg: DictConfig, primary: str):
        hydra = None
        if HydraConfig.initialized():
            hydra = HydraConfig.get()
        elif "hydra" in cfg:
            hydra = cfg.hydra
        self.choices = dict(hydra.runtime.choices) if hydra is not None else {}
        sources = list(hydra.runtime.config_sources) if hydra is not None else []
        main = [s.path for s in sources if s.provider == "main" and s.schema == "file"]
        self.config_dir = Path(main[0]) if main else CONFIG_DIR
        overrides = list(hydra.overrides.task) if hydra is not None else []
        self.command_line = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
        self.primary = primary
        self._files: list[tuple[Path, str, Any]] | None = None

    def where(self, key: str) -> str:
        try:
            found = self._sources(key)
        except Exception:  # naming the file is a courtesy: never let it hide the error itself
            found = []
        return f" ({found[0]})" if found else ""

    def _sources(self, key: str) -> list[str]:
        """The command line if it sets ``key``, else the last config file in composition order that does."""
        if key in self.command_line:
            return ["command line"]
        found = [path for path, package, doc in self.files() if _defines(doc, package, key)]
        return [str(found[-1].relative_to(self.config_dir.parent))] if found else []

    def files(self) -> list[tuple[Path, str, Any]]:
        if self._files is None:
            self._files, seen = [], set()
            self._visit(self.config_dir / f"{self.primary}.yaml", "", seen)
            for group, choice in self.choices.items():
                if group.startswith("hydra") or choice is None:
                    continue
                name, _, package = group.partition("@")
                self._visit(self.config_dir / name / f"{choice}.yaml", package or name.replace("/", "."), seen)
        return self._files

    def _visit(self, path: Path, package: str, seen: set) -> None:
        if (path, package) in seen or not path.is_file():
            return
        seen.add((path, package))
        text = path.read_text()
        header = re.search(r"^#\s*@package\s+(\S+)", text, re.M)
        if header:
            package = "" if header.group(1) == "_global_" else header.group(1)
        doc = OmegaConf.load(path)
        for entry in doc.get("defaults", []) if isinstance(doc, DictConfig) else []:
            if not isinstance(entry, str) or entry == "_self_":
                continue  # `override /group: option` entries are in the runtime choices already
            name, _, at = entry.partition("@")
            child = self.config_dir / f"{name[1:]}.yaml" if name.startswith("/") else path.parent / f"{name}.yaml"
            child_package = package if at == "_here_" else at or package
            self._visit(child, child_package, seen)
        self._files.append((path, package, doc))


def _defines(doc: Any, package: str, key: str) -> bool:
    if package:
        if not key.startswith(package + "."):
            return False
        key = key[len(package) + 1:]
    node = doc
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True
