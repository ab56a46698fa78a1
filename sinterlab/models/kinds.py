"""The kinds of candidate, by name: which class a candidate config builds and which class loads a
saved one. Every other module reads candidates through
:class:`~sinterlab.models.candidate.Candidate` alone.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from hydra.utils import get_class
from sklearn.base import BaseEstimator

from sinterlab.errors import SinterlabError
from sinterlab.models.candidate import Candidate
from sinterlab.models.estimators import EstimatorEnsemble
from sinterlab.models.head import HeadEnsemble
from sinterlab.models.linear import LinearEnsemble, LinearModel

#: kind name (as recorded in a run) -> the class that loads it
KINDS: dict[str, type[Candidate]] = {cls.kind: cls for cls in (HeadEnsemble, LinearEnsemble,
                                                                EstimatorEnsemble)}


def candidate_class(module, name: str = "") -> type[Candidate]:
    """The kind a candidate's ``module`` config builds, by its ``_target_``: a LightningModule
    (a head, trained by Lightning), :class:`LinearModel` (an affine scikit-learn model), or any
    other scikit-learn estimator. Anything else is refused in one line."""
    path = str(module._target_)
    try:
        target = get_class(path)
    except Exception:  # hydra raises ImportError, ValueError or its own errors
        target = None
    if isinstance(target, type) and issubclass(target, pl.LightningModule):
        return HeadEnsemble
    if target is LinearModel:
        return LinearEnsemble
    if isinstance(target, type) and issubclass(target, BaseEstimator):
        return EstimatorEnsemble
    raise SinterlabError(f"model {name}: module._target_={path!r} is neither a LightningModule "
                         "head nor a scikit-learn estimator; name one (e.g. "
                         "sklearn.ensemble.RandomForestClassifier)")


def load_candidate(path: Path, kind: str) -> Candidate:
    """The candidate of ``kind`` saved at ``path`` (its class's own safe loader)."""
    if kind not in KINDS:
        raise SinterlabError(f"{path}: a model of kind {kind!r}, which this sinterlab does not "
                             f"know (it knows {list(KINDS)}); upgrade sinterlab or train again")
    return KINDS[kind].load(Path(path))
