"""Train, then test the best checkpoint: `python train.py [experiment=<name>] [key=value ...]`;
a sweep: `python train.py -m hparams_search=<name>`."""

import hydra
from omegaconf import DictConfig

from deepfake_detect.console import in_multirun, run_task
from deepfake_detect.pipeline import objective, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_task(train, cfg)
    # what a sweeper minimises; in a multirun a missing or NaN value fails the trial
    return objective(metrics, cfg.optimized_metric, in_multirun())


if __name__ == "__main__":
    main()
