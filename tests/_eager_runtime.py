"""A runtime defined only in the tests, registered as a plugin (issue #24).

``EagerRuntime`` "converts" a model by saving it with ``save_pretrained`` and "runs" it
with transformers' own forward on padded batches, returning the chosen hidden states as
numpy: everything a runtime declares and does, and nothing native. tests/conftest.py
registers it, so the backend contract tests of tests/test_backends.py run on it beside
OpenVINO and ONNX Runtime; it has no int8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from xlmt_sklearn.backends._runtime import RuntimeEncoder


class EagerRuntime(RuntimeEncoder):
    """transformers' eager forward as a "runtime" (float32, CPU)."""

    name = "eager-test"
    package = "transformers"
    extra = "transformers"

    def _export(self, model: Any, layers: tuple[int, ...], folder: Path) -> None:
        model.save_pretrained(str(folder))
        (Path(folder) / "layers.json").write_text(json.dumps(list(layers)))

    def _quantize(self, float_folder: Path, folder: Path) -> None:  # pragma: no cover
        raise NotImplementedError("eager-test has no int8")

    def _compile(self, folder: Path, threads: int) -> Any:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
        return model, json.loads((Path(folder) / "layers.json").read_text())

    def _run(self, runner: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        model, layers = runner
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        output_hidden_states=True)  # fmt: skip
        return np.stack([out.hidden_states[i].numpy() for i in layers])
