"""Files a run folder could be edited to hold, each of which runs code (creates ``marker``) if
anything reads it as more than data: the routes of issue 41, replayed by
tests/test_run_folder_is_data.py."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path

import skops.io as sio


class _Touch:
    """Unpickled, it creates ``path`` (a shell-free stand-in for any code)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps(_Touch(marker))


def hydra_payloads(marker: Path, folder: Path) -> dict[str, dict]:
    """Nested ``_target_`` nodes that each create ``marker`` when instantiated (Hydra's own
    blocklist stops shell calls; these it did not stop)."""
    pickled = folder / "payload.pkl"
    pickled.write_bytes(pickle_bytes(marker))
    inline = base64.b64encode(pickle_bytes(marker)).decode()
    return {
        "numpy.load": {"_target_": "numpy.load", "file": {
            "_target_": "io.BytesIO", "initial_bytes": {
                "_target_": "base64.b64decode", "s": inline}}, "allow_pickle": True},
        "pandas.read_pickle": {"_target_": "pandas.read_pickle",
                               "filepath_or_buffer": str(pickled)},
        "torch.load": {"_target_": "torch.load", "f": str(pickled), "weights_only": False},
        "builtins.open": {"_target_": "builtins.open", "file": str(marker), "mode": "w"},
        "pathlib.Path.touch": {"_target_": "pathlib.Path.touch", "self": {
            "_target_": "pathlib.Path", "_args_": [str(marker)]}},
        "os.mkdir": {"_target_": "os.mkdir", "path": str(marker)},
        "shutil.copyfile": {"_target_": "shutil.copyfile", "src": str(pickled),
                            "dst": str(marker)},
    }


def skops_reduce_payload(path: Path, marker: Path, folder: Path) -> Path:
    """A .skops file whose one node is ``numpy.load(pickle, None, True)``: skops calls it while
    loading when the type is trusted, and the pickle runs."""
    pickled = folder / "payload.pkl"
    pickled.write_bytes(pickle_bytes(marker))
    sio.dump({"meta": "{}", "members": (str(pickled), None, True)}, path)
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(files["schema.json"])
    args = schema["content"]["members"]
    schema["content"]["members"] = {"__class__": "load", "__module__": "numpy",
                                    "__loader__": "ConstructorFromReduceNode",
                                    "content": args, "__id__": 1}
    files["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path
