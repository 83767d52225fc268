"""A native runtime's first-use self-check, once per machine, in a child process.

OpenVINO and ONNX Runtime pick their kernels from the CPU they find, and a CPU
we never measured can crash them or make them return garbage (OpenVINO
2026.4.1 aborts or returns NaN on AMX CPUs in a case we met: docs/backends.md,
"Known issues"). So the first time a runtime, a precision (or int8 scheme) and
a converted model are used on a machine, :func:`check_runtime` runs
``python -m xlmt_sklearn.backends._selfcheck JOB`` in a child process. The child
compiles the converted model exactly as the encoder will (same object, same
threads, same compiled-model cache), encodes :data:`PROBE_TEXTS` (varied
lengths, padded batches, one text at the model's length limit) and compares
them with torch float32 on the same rows at the precision's bar:

=========  ==============================================================
float32    every token value within :data:`FLOAT32_ATOL` of torch float32
bfloat16   cosine >= :data:`BF16_COSINE` per text (mean-pooled)
int8       cosine >= :data:`INT8_COSINE` per text (mean-pooled)
=========  ==============================================================

and every output finite. A crash, a hang past the timeout
(``XLMT_SKLEARN_SELFCHECK_TIMEOUT``, default :data:`DEFAULT_TIMEOUT_S` s) or a
disagreement fails the check; the user's process never runs the runtime until
the check passed.

The :class:`Verdict`, passed or failed, is stored as JSON in
``<converted root>/selfcheck/``, keyed by :func:`verdict_fields`: the CPU
(model name and every flag), the runtime's and torch's versions, the converted
model (model content, layers, weights), the precision and the thread count. So
each machine pays once per configuration; a Spark or Dask executor on other
hardware checks itself; an upgrade of either library checks again. Deleting the
file checks again; ``XLMT_SKLEARN_SELFCHECK=0`` turns the checks off.

What a failed check means is decided by the caller
(:func:`xlmt_sklearn.backends._auto.make_encoders`): ``backend="auto"`` falls back
to torch with one :class:`~xlmt_sklearn.RuntimeFallbackWarning`; an explicit
runtime raises :class:`~xlmt_sklearn.RuntimeCheckError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._filelock import file_lock
from .._state import owns
from ._devices import installed_version

__all__ = [
    "BF16_COSINE",
    "DEFAULT_TIMEOUT_S",
    "FLOAT32_ATOL",
    "INT8_COSINE",
    "PROBE_TEXTS",
    "SELFCHECK_ENV",
    "SELFCHECK_TIMEOUT_ENV",
    "Verdict",
    "check_runtime",
    "selfcheck_enabled",
    "verdict_fields",
]

#: ``0`` turns the self-check off (for people who know their hardware); default on.
SELFCHECK_ENV = "XLMT_SKLEARN_SELFCHECK"
#: Seconds the child may take before it counts as hung.
SELFCHECK_TIMEOUT_ENV = "XLMT_SKLEARN_SELFCHECK_TIMEOUT"
DEFAULT_TIMEOUT_S = 300
#: Bumped when the probe or the bars change: every machine checks again.
SELFCHECK_FORMAT = 1

FLOAT32_ATOL = 1e-4
BF16_COSINE = 0.999
INT8_COSINE = 0.99

#: Varied lengths, scripts, emoji and mentions; batched as padded groups of 8 and 7,
#: then :data:`LONG_TEXT` alone, cut at the model's length limit.
PROBE_TEXTS = (
    "ok",
    "I love this! 😍",
    "worst day ever @user #fail",
    "¡Me encanta este lugar! Volveré pronto con mis amigos.",
    "Das Wetter in Berlin ist heute wirklich schön, wir gehen in den Park.",
    "هذا أفضل يوم في حياتي",
    "यह फिल्म बहुत अच्छी थी, सबको देखनी चाहिए",
    "今日はとても楽しかったです。また行きたい！",
    "@user http://example.com RT: ça va? 🙂🙂🙂 #lundi",
    "No.",
    "The quick brown fox jumps over the lazy dog " * 4,
    "Очень плохой сервис, никогда больше не закажу здесь.",
    "🔥🔥🔥",
    "ciao mondo, tutto bene? spero di sì, a presto!",
    "Bu akşam maç var, herkes stadyuma!",
)
LONG_TEXT = " ".join(
    ["A long text that reaches the model's length limit, in several languages:"]
    + ["esto es una frase larga; das ist ein langer Satz; c'est une longue phrase."] * 40
)

_VERDICTS: dict[str, Verdict] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Verdict:
    """What a self-check found (stored as JSON; see the module docstring).

    Attributes
    ----------
    ok : bool
        The runtime compiled, ran and agreed with torch float32 at the bar.
    reason : str
        ``"passed"``, or what failed: a crash (with the signal), a timeout,
        non-finite output, a disagreement (with the measure and the bar).
    what : str
        The runtime, precision, model and CPU, for messages.
    path : str
        Where the verdict is stored (delete it to check again).
    seconds : float
        How long the check took (the child process, start to end).
    measures : dict
        The child's numbers (``max_abs`` or ``min_cosine``, ``bar``, ...).
    tail : str
        The child's last lines of output (for a crash: the runtime's own words).
    """

    ok: bool
    reason: str
    what: str
    path: str
    seconds: float
    measures: dict[str, Any] = field(default_factory=dict)
    tail: str = ""

    def explain(self) -> str:
        """The facts for a warning or an error: what failed, the child's words, what to do."""
        tail = "\n".join("    " + line for line in self.tail.strip().splitlines()[-8:])
        return (
            f"The self-check of {self.what} failed: {self.reason}."
            + (f" The check's last lines:\n{tail}\n" if tail else " ")
            + f"The verdict is stored in {self.path}: delete that file to check again "
            f"(after a driver or library upgrade), or set {SELFCHECK_ENV}=0 to skip the "
            "checks (docs/reliability.md, 'Native runtimes')."
        )


def selfcheck_enabled() -> bool:
    """Whether ``XLMT_SKLEARN_SELFCHECK`` leaves the checks on (the default)."""
    from .._env import env_flag

    return env_flag(SELFCHECK_ENV, True)


def verdict_fields(encoder: Any, layers: tuple[int, ...], threads: int) -> dict[str, Any]:
    """Everything a verdict depends on (its storage key), for ``encoder`` on this machine."""
    from .._machine import cpu_identity

    key, _ = encoder.conversion(tuple(layers))
    return {
        "format": SELFCHECK_FORMAT,
        "cpu": cpu_identity(),
        "runtime": encoder.name,
        "runtime_version": installed_version(encoder.name),
        "torch": installed_version("torch"),
        "converted": key,
        "precision": encoder.dtype,
        "quantize": encoder.scheme,
        "threads": int(threads),
    }


def check_runtime(encoder: Any, layers: tuple[int, ...], run: bool = True) -> Verdict | None:
    """The self-check verdict of ``encoder`` (a RuntimeEncoder) with ``layers`` on this machine.

    Returns the stored verdict when there is one; otherwise converts the model
    if needed, runs the check in a child process (one process at a time per
    configuration; the others wait for its verdict) and stores the verdict.
    None when the checks are off (``XLMT_SKLEARN_SELFCHECK=0``), or with
    ``run=False`` when no verdict is stored yet (nothing is converted or run).
    """
    if not selfcheck_enabled():
        return None
    import torch

    from ._convert import converted_root

    threads = torch.get_num_threads()
    fields = verdict_fields(encoder, layers, threads)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
    with _LOCK:
        if digest in _VERDICTS:
            return _VERDICTS[digest]
    folder = converted_root() / "selfcheck"
    path = folder / f"{digest}.json"
    verdict = _read(path)
    if verdict is None and not run:
        return None
    if verdict is None:
        with contextlib.suppress(OSError):  # a read-only root: check, keep the verdict in memory
            folder.mkdir(parents=True, exist_ok=True)
        # Waits at most the check's timeout plus a minute, then goes on unlocked (two checks
        # of one configuration cost time, never a wrong verdict); a read-only root: no lock.
        with file_lock(folder / f"{digest}.lock", wait_s=_timeout() + 60):
            verdict = _read(path)  # another process checked while this one waited
            if verdict is None:
                encoder.converted(tuple(layers))  # converting is not the check's work
                verdict = _run_child(encoder, layers, threads, path, _describe(encoder))
                _write(path, verdict, fields)
    with _LOCK:
        _VERDICTS[digest] = verdict
    return verdict


# ---------------------------------------------------------------------------- parent side
def _describe(encoder: Any) -> str:
    from .._machine import cpu_summary

    how = encoder.scheme or encoder.dtype
    return f"backend={encoder.name!r} ({how}) for model {encoder.spec.name!r} on {cpu_summary()}"


def _timeout() -> int:
    from .._env import env_int

    return env_int(SELFCHECK_TIMEOUT_ENV, DEFAULT_TIMEOUT_S, minimum=1)


def _read(path: Path) -> Verdict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        verdict = data["verdict"]
        return Verdict(**{**verdict, "path": str(path)})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, half-written or foreign: check again


def _write(path: Path, verdict: Verdict, fields: dict[str, Any]) -> None:
    """Store atomically; a store that fails only costs a check in the next process."""
    blob = json.dumps(
        {"verdict": asdict(verdict), "key": fields, "checked_at": time.time()}, indent=1
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_text(blob, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _run_child(
    encoder: Any, layers: tuple[int, ...], threads: int, path: Path, what: str
) -> Verdict:
    """Run the check in a child process; read its exit and its last line of output."""
    from ._convert import CONVERTED_ENV, converted_root

    timeout = _timeout()
    package_parent = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        # The child checks, it does not check itself; it converts into the same root.
        SELFCHECK_ENV: "0",
        CONVERTED_ENV: str(converted_root()),
        "PYTHONPATH": os.pathsep.join(
            p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    sys.stderr.write(f"xlmt_sklearn: first use of {what}: checking it (once)...\n")
    with tempfile.TemporaryDirectory(prefix="xlmt-selfcheck-") as tmp:
        job = Path(tmp) / "job.pkl"
        job.write_bytes(pickle.dumps({"encoder": encoder, "layers": tuple(layers),
                                      "threads": int(threads)}))  # fmt: skip
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "xlmt_sklearn.backends._selfcheck", str(job)],
                capture_output=True, text=True, errors="replace", timeout=timeout, env=env,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            seconds = time.perf_counter() - start
            tail = _text(exc.stderr) + _text(exc.stdout)
            return Verdict(False, f"it hung: no answer in {timeout} s (killed)", what,
                           str(path), seconds, {}, _last_lines(tail))  # fmt: skip
        seconds = time.perf_counter() - start
    tail = _last_lines(proc.stderr + proc.stdout)
    result = _result_line(proc.stdout)
    if proc.returncode != 0 or result is None:
        return Verdict(False, _exit_reason(proc.returncode), what, str(path), seconds, {}, tail)
    ok = bool(result.pop("ok"))
    reason = str(result.pop("reason"))
    outcome = "passed" if ok else "FAILED"
    sys.stderr.write(f"xlmt_sklearn: self-check {outcome} in {seconds:.1f} s\n")
    return Verdict(ok, reason, what, str(path), seconds, result, "" if ok else tail)


def _text(out: Any) -> str:
    if out is None:
        return ""
    return out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)


def _last_lines(text: str, n: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _result_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("XLMT_SELFCHECK "):
            try:
                return json.loads(line.split(" ", 1)[1])
            except ValueError:
                return None
    return None


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"it crashed ({name})"
    if code == 0:
        return "it exited without a result"
    return f"it failed (exit status {code})"


# ----------------------------------------------------------------------------- child side
def _probe_batches(tokenizer: Any, max_len: int) -> list[list[list[int]]]:
    rows = tokenizer(list(PROBE_TEXTS), truncation=True, max_length=max_len)["input_ids"]
    long_row = tokenizer([LONG_TEXT], truncation=True, max_length=max_len)["input_ids"]
    return [rows[:8], rows[8:], long_row]


def _model_limit(tokenizer: Any, config: Any) -> int:
    """At most 512 tokens, within the model's positions and the tokenizer's limit."""
    limit = 512
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limit = min(limit, positions - 2 if positions > 2 else positions)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < limit:
        limit = tok_limit
    return limit


def _measure(
    encoder: Any, reference: Any, batches: list[list[list[int]]], layers: tuple[int, ...]
) -> dict[str, Any]:
    """Encode every batch with both; the runtime's numbers against torch float32's."""
    from ._encoders import EncodeOptions

    options = EncodeOptions(layers=layers, layer_aggregation="concat", pooling=None)
    max_abs, cosines, finite = 0.0, [], True
    for rows in batches:
        none = np.zeros(len(rows), dtype=bool)
        got = encoder.encode(rows, options, none).tokens
        ref = reference.encode(rows, options, none).tokens
        for k, row in enumerate(rows):
            a, b = got[k, : len(row)].astype(np.float64), ref[k, : len(row)].astype(np.float64)
            if not np.isfinite(a).all():
                finite = False
                continue
            max_abs = max(max_abs, float(np.abs(a - b).max()))
            pa, pb = a.mean(0), b.mean(0)
            cosines.append(float(pa @ pb / max(np.linalg.norm(pa) * np.linalg.norm(pb), 1e-30)))
    return {"finite": finite, "max_abs": max_abs,
            "min_cosine": min(cosines) if cosines else float("nan"),
            "rows": sum(len(b) for b in batches)}  # fmt: skip


def _judge(encoder: Any, m: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    if not m["finite"]:
        return False, "it returned non-finite values (NaN or inf)", m
    if encoder.scheme is not None:
        bar, name = INT8_COSINE, "int8"
    elif encoder.dtype == "float32":
        ok = m["max_abs"] <= FLOAT32_ATOL
        reason = (
            "passed" if ok else
            f"it disagrees with torch float32: max abs difference {m['max_abs']:.3g} > "
            f"{FLOAT32_ATOL:g}"
        )  # fmt: skip
        return ok, reason, {**m, "bar": f"max abs <= {FLOAT32_ATOL:g}"}
    else:
        bar, name = BF16_COSINE, encoder.dtype
    ok = m["min_cosine"] >= bar
    reason = (
        "passed" if ok else
        f"it disagrees with torch float32: lowest cosine {m['min_cosine']:.4f} < {bar} "
        f"(the {name} bar)"
    )  # fmt: skip
    return ok, reason, {**m, "bar": f"cosine >= {bar}"}


def _child(job_path: str) -> int:
    """The child process: check the pickled encoder, print one ``XLMT_SELFCHECK`` line."""
    import torch

    from ._encoders import TorchEncoder
    from ._loading import ModelSpec, get_model

    job = pickle.loads(Path(job_path).read_bytes())
    encoder, layers = job["encoder"], tuple(job["layers"])
    torch.set_num_threads(int(job["threads"]))
    spec = encoder.spec
    reference = TorchEncoder(ModelSpec(
        name=spec.name, revision=spec.revision, content_hash=spec.content_hash, device="cpu",
        dtype="float32", trust_remote_code=spec.trust_remote_code,
    ))  # fmt: skip
    start = time.perf_counter()
    tokenizer = encoder.tokenizer()
    limit = _model_limit(tokenizer, get_model(reference.spec).model.config)
    batches = _probe_batches(tokenizer, limit)
    measures = _measure(encoder, reference, batches, layers)
    ok, reason, measures = _judge(encoder, measures)
    measures["child_seconds"] = round(time.perf_counter() - start, 3)
    print("XLMT_SELFCHECK " + json.dumps({"ok": ok, "reason": reason, **measures}), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(_child(sys.argv[1]))


@owns("verdicts")
def _reset_verdicts() -> None:
    with _LOCK:
        _VERDICTS.clear()
