"""How the frozen backbone runs: eager torch, ONNX Runtime or OpenVINO.

``features.runtime=torch`` runs the network of the configured representation (the timm model
itself for the final embedding; :mod:`sinterlab.features.representation`), in the memory format
its backbone config states (``backbone.channels_last``). ``onnxruntime`` and ``openvino`` run the
same network exported once per weights and representation to ONNX
(``<cache>/<backbone>-<weights>/onnx/``, written atomically; the stage statistics are operators
of the graph, so the export's one output is the whole vector), on the CPU, with as many threads
as torch uses. Their embeddings agree with torch's to float32 rounding
(tested), but not to the bit, so the runtime is part of the cache key. ``auto`` picks torch on
a GPU and OpenVINO on a CPU when it is installed (the fastest here; experiments/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from sinterlab.atomic import atomic_path
from sinterlab.errors import SinterlabError
from sinterlab.features.backbone import Backbone
from sinterlab.features.representation import FINAL, Representation

log = logging.getLogger(__name__)
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
#: the ONNX operator set of the export; part of the exported file's name
OPSET = 17
Runner = Callable[[torch.Tensor], torch.Tensor]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_runtime(requested: str, accelerator: str) -> str:
    """The runtime to use for ``features.runtime=requested`` on ``features.accelerator``."""
    if requested not in RUNTIMES:
        raise SinterlabError(f"features.runtime={requested!r} is unknown; use one of "
                             f"{list(RUNTIMES)}")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto"
                                                 and torch.cuda.is_available())
    if requested == "auto":
        ready = _installed("openvino") and _installed("onnx")
        return "openvino" if ready and not on_gpu else "torch"
    if requested != "torch":
        if on_gpu:
            raise SinterlabError(f"features.runtime={requested} runs on the CPU; with a GPU use "
                                 "features.runtime=torch (or features.accelerator=cpu)")
        absent = [m for m in (requested, "onnx") if not _installed(m)]
        if absent:
            raise SinterlabError(f"features.runtime={requested} needs the package(s) {absent}; "
                                 "pip install 'sinterlab[runtimes]' or use features.runtime=torch")
    return requested


def onnx_path(folder: Path, backbone: Backbone, size: int,
              representation: Representation = FINAL) -> Path:
    """The network of ``representation`` exported to ONNX for ``size`` px patches, exported on
    first use (the final embedding's file keeps the name it always had)."""
    tag = representation.tag(backbone)
    path = Path(folder) / "onnx" / f"{size}px-opset{OPSET}{'-' + tag if tag else ''}.onnx"
    if not path.is_file():
        log.info("exporting %s to %s (once per weights)", backbone.name, path)
        model = representation.network(backbone).to(memory_format=torch.contiguous_format)
        with atomic_path(path) as tmp, torch.inference_mode():
            torch.onnx.export(model, torch.zeros(1, 3, size, size), str(tmp), dynamo=False,
                              input_names=["patches"], output_names=["embeddings"],
                              dynamic_axes={"patches": {0: "batch"}, "embeddings": {0: "batch"}},
                              opset_version=OPSET)
    return path


def build_runner(runtime: str, backbone: Backbone, folder: Path, size: int,
                 representation: Representation = FINAL) -> Runner:
    """A function from a patch batch (n, 3, size, size) to its embeddings (n, width of
    ``representation``) on the CPU."""
    if runtime == "torch":
        fmt = torch.channels_last if backbone.channels_last else torch.contiguous_format
        model = representation.network(backbone).to(memory_format=fmt)
        return lambda x: model(x.contiguous(memory_format=fmt))
    path = onnx_path(folder, backbone, size, representation)
    threads = torch.get_num_threads()
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"patches": x.cpu().numpy()})[0])
    import openvino as ov

    # LATENCY: one request at a time on all threads (THROUGHPUT was 2x slower here)
    compiled = ov.Core().compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32", "CACHE_DIR": str(path.parent / "openvino")})
    return lambda x: torch.from_numpy(compiled(x.cpu().numpy())[0].copy())
