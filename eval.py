"""Score a checkpoint on test sets: `python eval.py ckpt_path=<file.ckpt> [data=...]`."""

import hydra
from omegaconf import DictConfig

from deepfake_detect.console import run_task
from deepfake_detect.pipeline import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
