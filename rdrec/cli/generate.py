"""rdrec-generate: teacher rationales (RDRec, SLIM) for a dataset's training data, into the rationale store."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from rdrec.data.pipeline import prepare_dataset
from rdrec.teacher.runner import run_generation
from rdrec.cli.checks import check_config
from rdrec.cli.errors import report_data_errors
from rdrec.utils.instantiate import instantiate_list
from rdrec.utils.resolvers import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="generate")
@report_data_errors
def main(cfg: DictConfig) -> float | None:
    check_config(cfg, ("data", "teacher.backend", "teacher.params", "teacher.retry", "subset",
                       *(f"families.{name}" for name in cfg.families)), primary="generate")
    prepared = prepare_dataset(instantiate(cfg.data.source), instantiate(cfg.data.split), cfg.data.cache_dir)
    families = {name: instantiate(spec) for name, spec in cfg.families.items() if spec is not None}
    if not families:
        raise SystemExit("rdrec: error: no prompt family selected (families.rdrec / families.slim)")
    summary = run_generation(
        prepared=prepared,
        families=families,
        backend=instantiate(cfg.teacher.backend),
        params=instantiate(cfg.teacher.params),
        retry=instantiate(cfg.teacher.retry),
        subset=instantiate(cfg.subset),
        seed=cfg.seed,
        batch_size=cfg.teacher.batch_size,
        retry_pool=cfg.teacher.get("retry_pool", 1),
        store_dir=str(Path(cfg.store_dir) / prepared.name),
        make_trainer=lambda callbacks: instantiate(cfg.trainer, callbacks=callbacks + instantiate_list(cfg.get("callbacks"))),
        output_dir=cfg.paths.output_dir,
        export_dir=cfg.export_dir,
    )
    return None if summary is None else summary["failure_rate"]


if __name__ == "__main__":
    main()
