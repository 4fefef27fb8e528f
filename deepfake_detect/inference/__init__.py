"""Using a trained detector: calibrated decisions (:mod:`.calibration`), long audio read in
blocks and cut into windows (:mod:`.blocks`), and scoring files, folders and manifests
(:mod:`.detect`). The console command ``deepfake-detect`` (:mod:`deepfake_detect.cli`) is a thin
layer over these."""
