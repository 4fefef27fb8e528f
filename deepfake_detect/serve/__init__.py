"""A local HTTP service around a trained detector (``deepfake-detect serve``): the app in
:mod:`.app` (FastAPI; the ``serve`` extra), the web page in ``static/``. This module stays free
of the web framework so that the command's ``--help`` and its error for a missing extra work
without it."""

SERVE_EXTRA_HINT = "pip install 'deepfake-detect[serve]'"


class ServeError(ValueError):
    """An option or an environment the service cannot start with."""
