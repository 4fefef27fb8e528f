"""Using a trained detector: calibrated decisions (:mod:`.calibration`), long audio read in
blocks and cut into windows (:mod:`.blocks`), scoring files, folders and manifests
(:mod:`.detect`), scoring a live stream window by window (:mod:`.streaming`), and the review
folder of suspicious clips (:mod:`.review`). The console command ``deepfake-detect``
(:mod:`deepfake_detect.cli`) is a thin layer over these."""
