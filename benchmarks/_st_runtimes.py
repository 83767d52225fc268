"""sentence-transformers on its ONNX and OpenVINO backends: contenders for bench_throughput.

They run in a separate virtual environment (``--st-python``), because
sentence-transformers' runtime backends go through ``optimum``, which does not
install beside this package's transformers. Recorded answers of pip, with
transformers 5.24 pinned: ``"sentence-transformers[onnx]"`` resolves only to
sentence-transformers 0.3.4 (no ONNX backend), and ``"sentence-transformers[openvino]"``
resolves to 5.7 with optimum-intel 1.15, which then fails to import (it needs
``openvino.runtime``, gone in OpenVINO 2026, and ``transformers.onnx``, gone in
transformers 5). Unpinned, both extras install together::

    python -m venv /tmp/st-runtimes
    /tmp/st-runtimes/bin/pip install torch==2.13.0 "sentence-transformers[onnx,openvino]" \
        datasets "huggingface-hub<1.0"
    # -> sentence-transformers 5.7, transformers 4.57, optimum-onnx 0.1, optimum-intel 1.27,
    #    datasets 5.0 (its static int8 reads calibration texts through datasets; unpinned,
    #    datasets pulls huggingface-hub 2, which transformers 4.57 does not accept)

This module is imported in that environment (by :class:`_workers.Remote` with
``python=``): it needs numpy and sentence-transformers, never xlmt_sklearn.
transformers 4 cannot read the ``tokenizer_config.json`` that transformers 5
writes (its ``extra_special_tokens`` list), so the model folder is copied with
those keys dropped (same ``tokenizer.json``, same weights: the outputs are
compared to torch float32 in the table).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
from pathlib import Path

from _workers import RssSampler

__all__ = ["ST_VARIANTS", "st_runtime_contender"]

#: Contender name -> (sentence-transformers backend, int8 file or None).
ST_VARIANTS = {
    "sentence-transformers onnx": ("onnx", None),
    "sentence-transformers onnx-qint8": ("onnx", "qint8"),
    "sentence-transformers openvino": ("openvino", None),
    "sentence-transformers openvino-qint8": ("openvino", "qint8"),
}


class _Contender:
    def __init__(self, run, note: str):
        self.run, self.note, self.padding = run, note, None
        self.last, self.load_mb = None, 0.0


def _folder_for_transformers4(model_dir: Path) -> Path:
    """A copy of ``model_dir`` whose tokenizer config transformers 4 reads."""
    folder = Path(tempfile.mkdtemp(prefix="st-runtime-")) / model_dir.name
    atexit.register(shutil.rmtree, folder.parent, True)  # the worker's exit removes it
    shutil.copytree(model_dir, folder)
    config = folder / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        for key in ("extra_special_tokens", "backend"):
            data.pop(key, None)
        config.write_text(json.dumps(data), encoding="utf-8")
    return folder


def _vnni() -> bool:
    try:
        return "avx512_vnni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _static_openvino(folder: Path, calibration: list[str]) -> dict:
    """``export_static_quantized_openvino_model`` on ``calibration``; the loader's kwargs.

    Its calibration set comes from ``datasets.load_dataset`` (GLUE SST-2 by
    default, from the hub); offline, a local folder of JSON lines stands in, with
    its other defaults (``OVQuantizationConfig()``; texts padded to 384 tokens).
    """
    from optimum.intel import OVQuantizationConfig
    from sentence_transformers import SentenceTransformer, export_static_quantized_openvino_model

    data = folder.parent / "calibration"
    data.mkdir()
    lines = (json.dumps({"sentence": t}, ensure_ascii=False) for t in calibration)
    (data / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = SentenceTransformer(str(folder), backend="openvino", device="cpu")
    export_static_quantized_openvino_model(
        base, OVQuantizationConfig(), str(folder), dataset_name=str(data),
        dataset_config_name="default", dataset_split="train", column_name="sentence",
    )  # fmt: skip
    return {"model_kwargs": {"file_name": "openvino/openvino_model_qint8_quantized.xml"}}


def st_runtime_contender(
    name: str, model_dir: Path, texts: list[str], calibration: list[str]
) -> _Contender:
    """Contender ``name`` of :data:`ST_VARIANTS`, loaded and warmed (``calibration``:
    the texts of its static int8, the ones xlmt_sklearn's static int8 gets)."""
    import sentence_transformers as stf
    from sentence_transformers import SentenceTransformer

    backend, quantize = ST_VARIANTS[name]
    with RssSampler() as rss:
        t0 = time.perf_counter()
        folder = _folder_for_transformers4(Path(model_dir))
        kwargs: dict = {}
        note = f"SentenceTransformer(backend={backend!r})"
        if quantize and backend == "openvino":
            kwargs = _static_openvino(folder, calibration)
            note += f", export_static_quantized_openvino_model({len(calibration)} other tweets)"
        elif quantize:
            config = "avx512_vnni" if _vnni() else "avx2"
            base = SentenceTransformer(str(folder), backend="onnx", device="cpu")
            stf.export_dynamic_quantized_onnx_model(base, config, str(folder))
            kwargs = {"model_kwargs": {"file_name": f"onnx/model_qint8_{config}.onnx"}}
            note += f", export_dynamic_quantized_onnx_model({config!r})"
        # No modules.json: sentence-transformers builds Transformer + mean Pooling.
        st = SentenceTransformer(str(folder), backend=backend, device="cpu", **kwargs)
        st.max_seq_length = 128
        c = _Contender(
            lambda: st.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False),
            note + f", encode(batch_size=32), max_seq_length=128; sentence-transformers "
            f"{stf.__version__} in a separate venv",
        )
        c.last = c.run()
    c.load_mb = rss.grew
    print(f"  loaded + warmed {name:<24} {time.perf_counter() - t0:6.1f} s", flush=True)
    return c
