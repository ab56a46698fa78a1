"""Per-image embedding cache, keyed by content so no experiment extracts a patch twice.

An entry's path is ``<root>/<backbone>-<weights sha>/<settings hash>/<image sha>.npz``: the
image file's bytes, the crop/equalize/patch settings and the backbone's weights all enter the
key, so changing one setting only misses the entries it affects, while the runs of a sweep (other
classes, splits, seeds, heads) hit the same files. Entries are written atomically, so a killed
extraction resumes with the images already done. An entry that cannot be read (a damaged disk, a
copy cut short) or that is wrong (another embedding width, NaN or infinite values, shapes that
do not match) is moved to ``<folder>/corrupt/`` with a warning and extracted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from sinterlab.atomic import write_text, write_with
from sinterlab.errors import SinterlabError
from sinterlab.runs import claim_file

log = logging.getLogger(__name__)

ENTRY_FIELDS = ("embeddings", "params", "crop")
HASH_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_sha256(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    embeddings: np.ndarray  # (patches, dim) float32
    params: np.ndarray  # (patches, 5): x0, y0, side, flip, angle in micrograph pixels
    crop: np.ndarray  # (4,): top, bottom, left, right in source pixels


class EmbeddingCache:
    """Folder of entries for one backbone (with its weights) and one preprocessing setting."""

    def __init__(self, root: str | Path, backbone_name: str, weights_sha: str, settings: dict,
                 embedding_dim: int | None = None):
        """``embedding_dim``: the backbone's; an entry of another width is wrong (None: any)."""
        safe_name = backbone_name.replace("/", "_")
        self.embedding_dim = embedding_dim
        self.settings_key = settings_sha256(settings)[:16]
        self.folder = Path(root) / f"{safe_name}-{weights_sha[:12]}" / self.settings_key
        self.settings = settings

    def path(self, image_sha: str) -> Path:
        return self.folder / f"{image_sha}.npz"

    def has(self, image_sha: str) -> bool:
        return self.path(image_sha).is_file()

    def load(self, image_sha: str) -> CacheEntry:
        with np.load(self.path(image_sha)) as data:
            return CacheEntry(*(data[name] for name in ENTRY_FIELDS))

    def entry_problem(self, entry: CacheEntry) -> str | None:
        """What is wrong with a readable ``entry``, or None: shapes that do not fit together,
        another embedding width than the backbone's, values that are not finite numbers."""
        embeddings, params, crop = entry.embeddings, entry.params, entry.crop
        if embeddings.ndim != 2 or params.ndim != 2 or len(embeddings) != len(params) or \
                not len(embeddings) or params.shape[1] != 5 or crop.shape != (4,):
            return (f"shapes {embeddings.shape}, {params.shape} and {crop.shape}, expected "
                    "(patches, width), (patches, 5) and (4,)")
        if self.embedding_dim is not None and embeddings.shape[1] != self.embedding_dim:
            return (f"embeddings {embeddings.shape[1]} wide, the backbone's are "
                    f"{self.embedding_dim}")
        for name, values in (("embeddings", embeddings), ("params", params), ("crop", crop)):
            if not np.issubdtype(values.dtype, np.number):
                return f"{name} of dtype {values.dtype}"
            if not np.isfinite(values).all():
                return f"{int((~np.isfinite(values)).sum())} NaN or infinite {name} values"
        return None

    def load_or_set_aside(self, image_sha: str, image: str) -> CacheEntry | None:
        """The entry if present, readable and right; a damaged or wrong one is moved to
        ``corrupt/`` with a warning naming it (None: extract ``image`` again)."""
        if not self.has(image_sha):
            return None
        try:
            entry = self.load(image_sha)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            problem = f"unreadable cache entry ({type(err).__name__}: {err})"
        else:
            wrong = self.entry_problem(entry)
            if wrong is None:
                return entry
            problem = f"wrong cache entry ({wrong})"
        aside = self.folder / "corrupt" / f"{image_sha}.{datetime.now():%Y%m%d-%H%M%S-%f}.npz"
        aside.parent.mkdir(exist_ok=True)
        os.replace(self.path(image_sha), aside)
        log.warning("%s: %s moved to %s; extracting %s again", self.path(image_sha), problem,
                    aside, image)
        return None

    def check_writable(self) -> None:
        """Fail before any extraction when new entries could not be saved."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".write-test-"):
                pass
        except OSError as err:
            raise SinterlabError(
                f"{self.folder}: embedding cache folder cannot be written ({err.strerror}); set "
                "features.cache_dir to a folder you can write (or ask its owner for group "
                "write access)") from None

    def claim(self, image_sha: str) -> bool:
        """This process extracts ``image_sha`` (True), unless another live one already does:
        jobs sharing a cache never extract an image twice at once."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.has(image_sha) or claim_file(self.folder / f"{image_sha}.claim")

    def release(self, image_sha: str) -> None:
        (self.folder / f"{image_sha}.claim").unlink(missing_ok=True)

    def save(self, image_sha: str, entry: CacheEntry) -> Path:
        settings_file = self.folder / "settings.json"
        if not settings_file.is_file():  # for people browsing the cache
            write_text(settings_file, json.dumps(self.settings, indent=2, sort_keys=True))
        arrays = {name: getattr(entry, name) for name in ENTRY_FIELDS}
        path = write_with(self.path(image_sha), lambda tmp: np.savez(tmp, **arrays))
        self.release(image_sha)
        return path
