"""Train, then test the best checkpoint: `python train.py [experiment=<name>] [key=value ...]`."""

import hydra
from omegaconf import DictConfig

from deepfake_detect.console import run_task
from deepfake_detect.pipeline import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_task(train, cfg)
    return metrics.get("val/eer")  # what a sweeper minimises


if __name__ == "__main__":
    main()
