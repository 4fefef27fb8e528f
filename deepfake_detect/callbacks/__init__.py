"""Lightning callbacks that the configs in ``conf/callbacks/`` add to a run."""
