"""Errors a user can fix, and how one is found again under the wrappers around it.

The package raises its own exception types (``CorpusError``, ``CheckpointError``,
``EncoderLoadError``, ``PreprocessingMismatch``, ``OutputDirError``, :class:`ConfigError`, ...)
only for conditions the user can fix, with a message that says how: such a message is the whole
story, and a traceback above it only hides it. Builtin exceptions (``KeyError``, ``IndexError``)
are bugs and keep their traceback.

Hydra wraps an exception raised while it instantiates a config in an ``InstantiationException``
(twice for a nested ``_target_``), whose message embeds the original's ``repr`` with escaped
newlines and quotes. :func:`find_user_error` walks the chain back to the original.
"""

from __future__ import annotations

import re

from hydra.errors import InstantiationException
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

PACKAGE = __name__.partition(".")[0]

CONFIG_VALUE_ERRORS = (MissingMandatoryValue, InterpolationResolutionError)
"""OmegaConf errors that only a config value can cause (a ``???`` left unset, an interpolation
that does not resolve)."""


CONSTRUCTOR_CONFIG_ERRORS = (ValueError, TypeError, ImportError, ModuleNotFoundError)
"""Exact types a ``_target_`` constructor (or Hydra locating it) raises for a bad config value,
an unknown keyword or a missing optional package."""


class ConfigError(ValueError):
    """A config value of the wrong type or out of range, or settings that contradict each other."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a fit or test (Lightning handles the ``KeyboardInterrupt`` itself and ends
    with ``sys.exit(1)``; the pipeline turns that back into this). ``checkpoint``: the latest
    checkpoint of the run, to resume from (None: none written yet)."""

    def __init__(self, checkpoint: str | None = None) -> None:
        super().__init__(checkpoint)
        self.checkpoint = checkpoint


def is_user_error(exc: BaseException) -> bool:
    """True for the package's own exception types (see the module docstring) and the OmegaConf
    errors only a config value can cause."""
    if isinstance(exc, CONFIG_VALUE_ERRORS):
        return True
    return any(cls.__module__.partition(".")[0] == PACKAGE for cls in type(exc).__mro__[:-2])


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and its explicit causes (``raise ... from``; Hydra wraps that way). An exception
    raised while another was handled is not caused by it: a bug there keeps its trace."""
    seen: list[BaseException] = []
    while exc is not None and all(exc is not s for s in seen):
        seen.append(exc)
        exc = exc.__cause__
    return seen


_FULL_KEY = re.compile(r"full_key: (\S+)")


def find_user_error(exc: BaseException) -> tuple[BaseException, str] | None:
    """The user error behind ``exc`` and the message to show, or None (a bug: keep the trace).

    A config value that a constructor rejects with a plain exception of
    :data:`CONSTRUCTOR_CONFIG_ERRORS` while Hydra instantiates it (``model.net.freeze=al``, an
    unknown keyword, a ``_target_`` that does not import) is a user error too; its message is
    prefixed with the config key Hydra names."""
    chain = _chain(exc)
    for error in chain:
        if is_user_error(error):
            return error, str(error)
    wrappers = [e for e in chain if isinstance(e, InstantiationException)]
    inner = chain[-1]
    if wrappers and type(inner) in CONSTRUCTOR_CONFIG_ERRORS:
        keys = [m.group(1) for w in wrappers if (m := _FULL_KEY.search(str(w).splitlines()[-1]))]
        return inner, (f"{keys[-1]}: " if keys else "") + str(inner)
    return None
