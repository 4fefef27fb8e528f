"""What ``detect`` writes, in words: the one statement of the score semantics, printed by
``deepfake-detect detect --help`` (and kept free of heavy imports so ``--help`` is quick). The
mechanics are in :mod:`deepfake_detect.inference.calibration`."""

SCORE_SEMANTICS = """\
What the output means:
  score     the model's bona fide score: log-odds of bona fide (the logit difference for
            cross-entropy models); higher = more bona fide. Not calibrated, and not comparable
            between models.
  p_spoof   the probability that the audio is spoofed, from the calibration stored in the
            checkpoint: a logistic map score -> log-likelihood ratio fitted on the development
            set, read at the operating prior of the threshold, so that p_spoof = 0.5 exactly at
            the threshold (for a Bayes threshold it is the posterior at that prior).
  threshold the score at which the decision switches, stored with the calibration: the dev
            set's equal-error-rate point (default), a target false-acceptance rate (spoofs
            accepted as bona fide), a Bayes threshold for a bona fide prior, or a fixed score
            (`deepfake-detect calibrate`, or fitted at the end of training). Without a stored
            calibration the threshold is score 0 (p_spoof = sigmoid(-score)), and the summary
            says "uncalibrated".
  decision  uncertain when |p_spoof - 0.5| < the reject band (--reject-band; default: the
            calibration's, 0.1), else spoof when p_spoof > 0.5, else bonafide.
  long audio is scored in windows of the model's training crop; the file's score aggregates
            the window scores (--aggregate: mean, min = the most spoof-like window, or
            spoof_fraction: p_spoof is the fraction of windows decided spoof and score their
            median)."""

AGGREGATES = ("mean", "min", "spoof_fraction")
"""How a file's window scores make its score (see :data:`SCORE_SEMANTICS`)."""
