"""The candidate contract: what every kind of model under test does, whatever trains it.

A candidate is a config (``conf/model/<name>.yaml``): what it reads (``inputs``, one of
:data:`INPUTS`) and how it is built (``module._target_``). Fitted on the folds of an assignment
it is an ensemble of members, ``per_group`` per group (fold), that implements
:class:`Candidate`: each member's outputs on patch rows (class probabilities or values), its
temperatures, saving and loading by its ``kind`` (no file suffix decides), and a description.
Model selection, calibration, the run record and ``sinterlab-predict`` read candidates through
this contract only, so a new kind is one class: a subclass that names its ``kind`` registers
itself by that name in :data:`KINDS` as it is defined, and says which ``module._target_``
classes it builds (:meth:`Candidate.builds`); a kind fitted per fold rather than by Lightning
also has a ``fit_folds(modules, inputs, view)`` classmethod, as
:func:`sinterlab.study.fit.fit_models` calls it. A new scikit-learn estimator is one YAML file.

Inputs are always patch rows (embedding, then ``data.extra_inputs``), with each row's image id
and its image's microstructure measures; an image-level view turns them into one row per image
(:func:`view_rows`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from sinterlab.data.groups import Groups
from sinterlab.errors import SinterlabError

#: what a candidate reads: each patch's embedding; each image's mean embedding; each image's
#: microstructure measures; or an embedding and the image's measures side by side
INPUTS = ("patch", "image_mean", "measures", "image_mean+measures", "patch+measures")
#: views with one row per image (the others: one row per patch)
IMAGE_VIEWS = ("image_mean", "measures", "image_mean+measures")


#: every kind of candidate by its name (as recorded in a run): each :class:`Candidate` subclass
#: that names its own ``kind``, registered as it is defined (:mod:`sinterlab.models.kinds`
#: imports the shipped ones)
KINDS: dict[str, type[Candidate]] = {}


def reads_measures(inputs: str) -> bool:
    return "measures" in inputs.split("+")


def check_inputs(inputs: str, name: str) -> str:
    if inputs not in INPUTS:
        raise SinterlabError(f"model {name}: inputs={inputs!r} is unknown; use one of "
                             f"{list(INPUTS)}")
    return inputs


@dataclass(frozen=True)
class FoldView:
    """What a candidate fitted per fold (scikit-learn) reads: every row's inputs and targets,
    and per group (fold) the rows its member fits on."""

    #: (N, D) patch embeddings, then the ``extra`` columns of ``data.extra_inputs``
    x: np.ndarray
    #: (N, T) targets (class index or value)
    y: np.ndarray
    #: (N,) each row's image id
    images: np.ndarray
    #: (N, K) each row's image's measures (NaN: not measurable); None: not computed
    measures: np.ndarray | None
    #: per group, the rows its member is fitted on
    rows: list[np.ndarray]
    #: target specs (name, kind, classes, num_classes, ...)
    targets: list[dict]
    seed: int
    extra: int = 0


def view_rows(inputs: str, x: np.ndarray, images: np.ndarray | None,
              measures: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The design matrix of ``inputs`` from N patch rows, and for each patch row the index of
    its design row. Image views take one row per image (first appearance order): the mean of
    its patch rows' embeddings and/or its measures; without ``images`` every patch row counts
    as its own image (a map applies an image model to each patch)."""
    x = np.asarray(x, dtype=np.float64)
    if reads_measures(inputs) and measures is None:
        raise ValueError(f"inputs={inputs}: this model reads the images' measures; none given")
    if inputs in IMAGE_VIEWS and images is not None:
        groups = Groups.of(images)
        index = groups.index
        first = np.unique(index, return_index=True)[1]
        parts = []
        if inputs != "measures":
            parts.append(groups.means(x))
        if reads_measures(inputs):
            parts.append(np.asarray(measures, dtype=np.float64)[first])
        return np.hstack(parts), index
    parts = [] if inputs == "measures" else [x]
    if reads_measures(inputs):
        parts.append(np.asarray(measures, dtype=np.float64))
    return np.hstack(parts), np.arange(len(x))


def raw_members(model: Candidate, calibrated: list[np.ndarray], x, **kwargs,
                ) -> list[np.ndarray]:
    """``model``'s raw member outputs of ``x``: its ``calibrated`` ones again where every
    temperature is exactly 1 (scikit-learn models: no second pass), else a pass without."""
    scaled = any(t is not None and np.any(np.asarray(t) != 1.0) for t in model.temperatures())
    return model.predict_members(x, calibrated=False, **kwargs) if scaled else calibrated


class Candidate(ABC):
    """A fitted candidate: ``members`` members, ``per_group`` per group (fold), ordered
    group-major (member ``m`` belongs to group ``m // per_group``)."""

    #: the name its checkpoints are loaded by (recorded in the run's records and manifest)
    kind: ClassVar[str]
    #: its checkpoint's file suffix (for people: loading goes by ``kind``)
    suffix: ClassVar[str]
    #: whether its outputs are differentiable in the embedding (``member_outputs``: Grad-CAM
    #: through the backbone)
    gradients: ClassVar[bool] = False
    #: where several kinds build a ``module._target_`` (:meth:`builds`), the highest wins: a
    #: kind for one class outranks one for a whole family of classes
    precedence: ClassVar[int] = 0
    #: target specs, one per target
    targets: list[dict]
    #: what it reads (:data:`INPUTS`)
    inputs: str
    #: the width of the patch rows it reads: embedding, then ``data.extra_inputs``
    in_features: int

    def __init_subclass__(cls, **kwargs):
        """A subclass that names its own ``kind`` is a kind of candidate: registered in
        :data:`KINDS` by that name, which no other class may take (a subclass without its own
        ``kind`` is saved and loaded as its parent's kind)."""
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            return
        known = KINDS.get(cls.kind)
        # the same class defined again (its module reloaded) takes its own place
        if known is not None and (known.__module__, known.__qualname__) != (
                cls.__module__, cls.__qualname__):
            raise TypeError(f"candidate kind {cls.kind!r} is {known.__module__}."
                            f"{known.__qualname__} already; give {cls.__qualname__} a kind "
                            "of its own")
        KINDS[cls.kind] = cls

    @classmethod
    @abstractmethod
    def builds(cls, target: type) -> bool:
        """Whether a candidate whose ``module._target_`` is the class ``target`` is of this
        kind (:func:`sinterlab.models.kinds.candidate_class`)."""

    @property
    @abstractmethod
    def members(self) -> int: ...

    @property
    @abstractmethod
    def per_group(self) -> int: ...

    @abstractmethod
    def predict_members(self, x, batch_size: int = 4096, calibrated: bool = True,
                        images: np.ndarray | None = None,
                        measures: np.ndarray | None = None) -> list[np.ndarray]:
        """``x`` (G, N, D) (group g's rows for its members) or (N, D) (every member reads the
        same rows) -> per target (M, N, C) class probabilities or (M, N) values. ``images``
        ((G, N) or (N,)): which image each row belongs to (an image view gives each row its
        image's output); ``measures`` ((G, N, K) or (N, K)): each row's image's measures, for
        a model that reads them. ``calibrated``: with per-member temperatures where it has
        any."""

    @abstractmethod
    def temperatures(self) -> list[list[float] | None]:
        """Per target, each member's temperature (None for regression)."""

    @abstractmethod
    def save(self, path: Path) -> Path:
        """Write the fitted members to ``path`` (atomically); returns it."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Candidate:
        """The candidate saved at ``path``; nothing in the file runs code."""

    @abstractmethod
    def describe(self) -> dict:
        """Kind, inputs, members and the fitted settings, for the run record."""

    @property
    def reads_measures(self) -> bool:
        return reads_measures(self.inputs)

    @property
    def reads_patches(self) -> bool:
        """Whether its output depends on the patch embeddings (a map can show it)."""
        return self.inputs != "measures"
