"""rdrec-data: dataset statistics before and after filtering, or export of the prepared split."""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from rdrec.data.export import export
from rdrec.data.pipeline import load_canonical, prepare_dataset
from rdrec.cli.checks import check_config
from rdrec.cli.errors import report_data_errors
from rdrec.utils.resolvers import CONFIG_DIR


def stats_table(before: dict, after: dict) -> str:
    lines = ["| statistic | before filtering | after filtering |", "|---|---|---|"]
    for key in before:
        b, a = before[key], after.get(key, "")
        fmt = (lambda v: f"{v:.6f}" if key == "density" else (f"{v:g}" if isinstance(v, float) else str(v)))
        lines.append(f"| {key} | {fmt(b)} | {fmt(a) if a != '' else ''} |")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="data")
@report_data_errors
def main(cfg: DictConfig) -> None:
    check_config(cfg, ("data", "eval"), primary="data")
    source = instantiate(cfg.data.source)
    split = instantiate(cfg.data.split)
    prepared = prepare_dataset(source, split, cfg.data.cache_dir)
    if cfg.action == "stats":
        canonical = load_canonical(source, cfg.data.cache_dir)
        print(f"\n{source.name}\n" + stats_table(canonical.stats(), prepared.stats()))
    elif cfg.action == "export":
        export(prepared, cfg.export.dir, formats=tuple(cfg.export.formats))
        print(f"exported {source.name} ({', '.join(cfg.export.formats)}) to {cfg.export.dir}")
    else:
        raise ValueError(f"unknown action '{cfg.action}': expected 'stats' or 'export'")


if __name__ == "__main__":
    main()
