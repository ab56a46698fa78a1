"""The kinds of candidate, by name: which class a candidate config builds and which class loads a
saved one. Every other module reads candidates through
:class:`~sinterlab.models.candidate.Candidate` alone.

A kind is its class alone: a :class:`~sinterlab.models.candidate.Candidate` subclass registers
itself by its ``kind`` as it is defined (:data:`KINDS`), and says which ``module._target_``
classes it builds (``builds``, ``precedence``). Importing this module imports every module of
:mod:`sinterlab.models`, so the kinds sinterlab ships are registered before any is asked for. A
kind name read from a run folder only selects among the classes registered in code: nothing is
imported by it.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from hydra.utils import get_class

import sinterlab.models
from sinterlab.errors import SinterlabError
from sinterlab.models.candidate import KINDS, Candidate

__all__ = ["KINDS", "candidate_class", "load_candidate"]


def _register_shipped_kinds() -> None:
    """Import every module of :mod:`sinterlab.models`: each kind defined there registers
    itself."""
    for module in pkgutil.iter_modules(sinterlab.models.__path__, "sinterlab.models."):
        importlib.import_module(module.name)


_register_shipped_kinds()


def candidate_class(module, name: str = "") -> type[Candidate]:
    """The kind a candidate's ``module`` config builds, by its ``_target_``: of the kinds whose
    :meth:`~sinterlab.models.candidate.Candidate.builds` takes that class, the one of highest
    ``precedence`` (as shipped: a LightningModule, a head trained by Lightning;
    :class:`~sinterlab.models.linear.LinearModel`, an affine scikit-learn model; or any other
    scikit-learn estimator). Resolving the target imports its module, so a kind defined beside
    its model class is registered by then. Anything else is refused in one line."""
    path = str(module._target_)
    try:
        target = get_class(path)
    except Exception:  # hydra raises ImportError, ValueError or its own errors
        target = None
    kinds = [cls for cls in KINDS.values() if cls.builds(target)] \
        if isinstance(target, type) else []
    if not kinds:
        raise SinterlabError(f"model {name}: module._target_={path!r} is neither a LightningModule "
                             "head nor a scikit-learn estimator; name one (e.g. "
                             "sklearn.ensemble.RandomForestClassifier)")
    top = max(cls.precedence for cls in kinds)
    first = [cls for cls in kinds if cls.precedence == top]
    if len(first) > 1:
        raise SinterlabError(f"model {name}: module._target_={path!r} is built by the kinds "
                             f"{[cls.kind for cls in first]} alike; give the one meant for it "
                             "a higher precedence")
    return first[0]


def load_candidate(path: Path, kind: str) -> Candidate:
    """The candidate of ``kind`` saved at ``path`` (its class's own safe loader)."""
    if kind not in KINDS:
        raise SinterlabError(f"{path}: a model of kind {kind!r}, which this sinterlab does not "
                             f"know (it knows {sorted(KINDS)}); upgrade sinterlab or train again")
    return KINDS[kind].load(Path(path))
