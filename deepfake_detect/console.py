"""What a run shows on the terminal, in one place: the entry points' error handling (our message
once, no traceback), the noise of dependencies silenced, failed and interrupted run directories
(removed when they hold no results, else marked ``FAILED`` / ``INTERRUPTED``) and the resume
command printed on Ctrl-C.

``train.py`` and ``eval.py`` call :func:`run_task` with the library function they wrap.
``HYDRA_FULL_ERROR=1`` keeps Hydra's full traceback; either way the full trace of a failed
run is written to the run's log file (``<run>/train.log``) and its ``FAILED`` marker.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.errors import CompactHydraException
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from deepfake_detect.errors import find_user_error

log = logging.getLogger(__name__)

T = TypeVar("T")

FAILED = "FAILED"
"""Written into a run directory whose run raised: the error and its full traceback."""
INTERRUPTED = "INTERRUPTED"
"""Written into a run directory whose run was interrupted (Ctrl-C): the command that resumes it."""
RUN_MARKER = ".run.json"
"""Written into a run directory by the run that owns it (``pipeline.claim_output_dir``):
``status`` running | finished | failed | interrupted, ``pid``, ``host``, ``started``, and at the
end ``ended`` (epoch seconds) and, for a failed run, ``error`` (one line). ``compare`` reads it."""

NOISE_WARNINGS = (
    # torch deprecates LeafSpec; Lightning's _pytree still uses it (every optimizer step)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
"""(message regex, category) of dependency warnings about the dependencies' own code."""
NOISE_LOG_PREFIXES = ("💡 Tip",)
"""Lightning's product tips (litlogger, litmodels) at the start of every fit."""
LIGHTNING_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE_LOG_PREFIXES)


_DROP_NOISE = _DropNoise()


def quiet_dependencies() -> None:
    """Silence dependency output that is not about this run (idempotent). Warnings that are
    intentional here stay, e.g. Lightning's "module(s) in eval mode at the start of training"
    for a frozen encoder (see the README)."""
    for message, category in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP_NOISE not in logger.filters:
            logger.addFilter(_DROP_NOISE)


# -- output that reaches the terminal once and the run's log file -------------------------------
def log_files() -> list[Path]:
    """The files the root logger writes to (Hydra's ``<run>/<task>.log``)."""
    handlers = logging.getLogger().handlers
    return [Path(h.baseFilename) for h in handlers if isinstance(h, logging.FileHandler)]


def to_log_files(text: str, level: int = logging.INFO) -> None:
    """Write ``text`` to the log files only (for what is printed to the terminal separately)."""
    record = logging.LogRecord(__name__, level, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def announce(text: str) -> None:
    """Print ``text`` to stdout (flushed: redirected output shows it at once) and write it to
    the log files."""
    print(text, flush=True)
    to_log_files(text)


# -- run directory markers ----------------------------------------------------------------------
def _run_dir(cfg: DictConfig) -> Path | None:
    try:
        return Path(cfg.paths.output_dir)
    except Exception:  # no Hydra runtime (a composed config): nothing to mark
        return None


def mark(run_dir: Path | None, name: str, text: str) -> None:
    if run_dir is None or rank_zero_only.rank != 0 or not run_dir.is_dir():
        return
    (run_dir / name).write_text(text.rstrip() + "\n")


def holds_results(run_dir: Path) -> bool:
    """Whether a run directory holds something the run produced: a checkpoint, metrics or
    score files (the rest, ``.hydra``, the log, a logger's folder, is there from the start)."""
    produced = ("metrics.json", "scores")
    return any(run_dir.glob("checkpoints/*.ckpt")) or any((run_dir / p).exists() for p in produced)


def settle_failed_run(run_dir: Path | None, text: str, keep: bool = False) -> str | None:
    """After a failure: remove ``run_dir`` when it holds no result (a typo on the command line
    leaves no directory behind), else (or with ``keep``) write ``FAILED``, the error and its
    trace, into it. Returns what happened to it, in words (None: nothing to settle)."""
    if run_dir is None or rank_zero_only.rank != 0 or not run_dir.is_dir():
        return None
    if not keep and not holds_results(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        return None
    mark(run_dir, FAILED, text)
    return f"run directory {run_dir} marked {FAILED}, with the full trace"


def clear_marks(run_dir: Path | None) -> None:
    """A run that ends well (a resumed one, say) is no longer failed or interrupted."""
    if run_dir is None or rank_zero_only.rank != 0:
        return
    for name in (FAILED, INTERRUPTED):
        (run_dir / name).unlink(missing_ok=True)


def end_run(run_dir: Path | None, status: str, error: str | None = None) -> None:
    """Record how the run that owns ``run_dir`` ended in its :data:`RUN_MARKER`. Only this
    process's marker is touched: a run refused a directory (another run's) leaves it alone."""
    if run_dir is None or rank_zero_only.rank != 0:
        return
    marker = run_dir / RUN_MARKER
    try:
        state = json.loads(marker.read_text())
    except (OSError, ValueError):
        return
    if state.get("pid") != os.getpid():
        return
    state.update(status=status, ended=time.time())
    if error is not None:
        state["error"] = " ".join(error.split())  # one line
    else:
        state.pop("error", None)
    marker.write_text(json.dumps(state))


# -- errors and interrupts ----------------------------------------------------------------------
class ReportedError(CompactHydraException):
    """A user error, shown by Hydra as its message alone (no traceback)."""


def full_error_wanted() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not in a Hydra app
        return []


def in_multirun() -> bool:
    """Whether this job is one of a multirun (``-m``, a sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not in a Hydra app
        return False


def resume_command(run_dir: Path, checkpoint: Path | None, script: str | None = None) -> str:
    """The command line that continues the run in ``run_dir`` from ``checkpoint`` (or starts it
    again, without one): the run's own overrides, its checkpoint and run directory."""
    script = script or sys.argv[0]
    replaced = {"ckpt_path", "hydra.run.dir"}
    kept = [o for o in _overrides() if o.lstrip("+~").split("=", 1)[0] not in replaced]
    args = ["python", script, *kept]
    if checkpoint is not None:
        args += [f"ckpt_path={checkpoint}", f"hydra.run.dir={run_dir}"]
    return " ".join(shlex.quote(a) for a in args)


def interrupted_message(exc: BaseException, run_dir: Path | None) -> str:
    checkpoint = getattr(exc, "checkpoint", None)
    if checkpoint is None and run_dir is not None:
        last = run_dir / "checkpoints" / "last.ckpt"
        checkpoint = last if last.is_file() else None
    where = f"interrupted: {run_dir}" if run_dir else "interrupted"
    if run_dir is None:
        return where
    if checkpoint is None:
        return f"{where}\nno checkpoint was written yet; run it again with:\n  " + resume_command(
            run_dir, None
        )
    return f"{where}\nresume it with:\n  " + resume_command(run_dir, Path(checkpoint))


def run_task(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run an entry point's task: a user error is printed as ``error: <message>`` once (Hydra
    exits 1), Ctrl-C prints the run directory and the command that resumes it (exit 130). A
    failed run's directory is removed when it holds no results, else marked
    ``FAILED``; an interrupted one is marked ``INTERRUPTED`` (the marks are cleared when a run
    of that directory ends well)."""
    quiet_dependencies()
    run_dir = _run_dir(cfg)
    try:
        result = task(cfg)
    except KeyboardInterrupt as exc:
        text = interrupted_message(exc, run_dir)
        mark(run_dir, INTERRUPTED, text)
        end_run(run_dir, "interrupted")
        to_log_files(text, logging.WARNING)
        sys.stderr.write(text + "\n")
        raise SystemExit(130) from None
    except Exception as exc:
        trace = traceback.format_exc()
        found = find_user_error(exc)
        message = found[1] if found else f"{type(exc).__name__}: {exc}"
        to_log_files(f"error: {message}\n{trace}", logging.ERROR)
        end_run(run_dir, "failed", message)
        # a bug keeps its directory (evidence); a user error's without results goes, save in a
        # sweep, whose failed trials stay listed (FAILED, .run.json) next to the others
        keep = found is None or in_multirun()
        settled = settle_failed_run(run_dir, f"{message}\n\n{trace}", keep=keep)
        if found is None or full_error_wanted():
            raise
        raise ReportedError(f"error: {message}" + (f"\n({settled})" if settled else "")) from None
    clear_marks(run_dir)
    end_run(run_dir, "finished")
    return result
