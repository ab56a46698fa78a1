"""Per-image embedding cache, keyed by content so no experiment extracts a patch twice.

An entry's path is ``<root>/<backbone>-<weights sha>/<settings hash>/<image sha>.npz``: the
image file's bytes, the crop/equalize/patch settings and the backbone's weights all enter the
key, so changing one setting only misses the entries it affects, while the runs of a sweep (other
classes, splits, seeds, heads) hit the same files. Entries are written atomically, so a killed
extraction resumes with the images already done. An entry that cannot be read (a damaged disk, a
copy cut short) is moved to ``<folder>/corrupt/`` with a warning and extracted again.
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

    def __init__(self, root: str | Path, backbone_name: str, weights_sha: str, settings: dict):
        safe_name = backbone_name.replace("/", "_")
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

    def load_or_set_aside(self, image_sha: str, image: str) -> CacheEntry | None:
        """The entry if present and readable; a damaged one is moved to ``corrupt/`` with a
        warning naming it (None: extract ``image`` again)."""
        if not self.has(image_sha):
            return None
        try:
            entry = self.load(image_sha)
            if entry.embeddings.ndim != 2 or len(entry.embeddings) != len(entry.params) or \
                    not len(entry.embeddings):
                raise ValueError(f"shapes {entry.embeddings.shape} and {entry.params.shape}")
            return entry
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            aside = self.folder / "corrupt" / \
                f"{image_sha}.{datetime.now():%Y%m%d-%H%M%S-%f}.npz"
            aside.parent.mkdir(exist_ok=True)
            os.replace(self.path(image_sha), aside)
            log.warning("%s: unreadable cache entry (%s: %s) moved to %s; extracting %s again",
                        self.path(image_sha), type(err).__name__, err, aside, image)
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
