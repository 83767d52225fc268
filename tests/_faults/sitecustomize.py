"""Fault injection into the runtimes' self-check child (tests/test_selfcheck.py).

Python imports ``sitecustomize`` at start-up from ``sys.path``: a test puts this
folder on ``PYTHONPATH`` and names a fault in ``XLMT_TEST_FAULT``. It acts only in
the self-check's child process (the one started with ``XLMT_SKLEARN_SELFCHECK=0``
by :mod:`xlmt_sklearn.backends._selfcheck`), never in the test's own process, and patches
the runtimes' raw forward pass, the way a broken native library misbehaves:

``abort``  the process dies (SIGABRT), as OpenVINO did on AMX;
``nan``    one hidden unit is NaN;
``wrong``  finite but wrong hidden states (units reversed);
``hang``   the forward pass never returns.

Each start of a child appends a line to ``XLMT_TEST_FAULT_LOG`` when set, so a
test can count the checks that ran.
"""

import os


def _install() -> None:
    if os.environ.get("XLMT_SKLEARN_SELFCHECK") != "0" or "XLMT_TEST_FAULT" not in os.environ:
        return
    log = os.environ.get("XLMT_TEST_FAULT_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
    mode = os.environ["XLMT_TEST_FAULT"]
    if mode == "none":
        return
    import time

    import numpy as np

    from xlmt_sklearn.backends import _onnxruntime as ort_rt
    from xlmt_sklearn.backends import _openvino as ov_rt

    def patch(cls):
        real = cls._run

        def _run(self, runner, ids, mask):
            if mode == "abort":
                os.abort()
            if mode == "hang":
                time.sleep(3600)
            out = np.array(real(self, runner, ids, mask), dtype=np.float32)
            if mode == "nan":
                out[..., 0] = np.nan
            elif mode == "wrong":
                out = np.ascontiguousarray(out[..., ::-1])
            return out

        cls._run = _run

    patch(ov_rt.OpenVINOEncoder)
    patch(ort_rt.OnnxRuntimeEncoder)


_install()
