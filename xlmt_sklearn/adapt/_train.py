"""One supervised fine-tune of an encoder, deterministic given its seed, resumable per epoch.

:func:`fine_tune` trains the base model's encoder on (text, label) pairs with one of
two per-batch objectives and writes a ``save_pretrained`` folder:

* ``"classification"``: mean pooling over the last layer, a linear head,
  cross-entropy (the head is dropped afterwards: the featurizer keeps the
  encoder only);
* ``"contrastive"``: a supervised contrastive loss over each batch's mean-pooled,
  L2-normalised vectors (texts of one label pulled together, SetFit's idea
  without its pair sampling).

Recipe options (all in the key, all off by default): ``average`` keeps a running mean of
the encoder's weights over the last share of the steps and saves that; ``head_init="probe"``
starts the head as a logistic regression on the base model's features; ``label_smoothing``
smooths the cross-entropy's targets.

The order of the texts in each epoch comes from a generator seeded by
``seed + epoch``, the head's initial weights from ``seed``: two runs with the same
inputs give the same weights on the same machine. At each epoch's end the state
(encoder, head, optimizer, schedule) is written to ``checkpoint.pt`` in the work
folder, so an interrupted fine-tune resumes at the last finished epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._options import OBJECTIVES, OPTIONS
from ..backends._loading import quiet_loading

__all__ = ["OBJECTIVES", "TrainSpec", "fine_tune"]

_CHECKPOINT = "checkpoint.pt"


def _default(name: str) -> Any:
    """The estimator's default of option ``name``: the recipe is declared once, in OPTIONS."""
    return next(o.default for o in OPTIONS if o.name == name)


@dataclass(frozen=True)
class TrainSpec:
    """The training options (all of them enter the adapted folder's key); the defaults
    are the estimator's."""

    objective: str = _default("objective")
    epochs: int = _default("epochs")
    learning_rate: float = _default("learning_rate")
    batch_size: int = _default("train_batch_size")
    max_length: int = _default("train_max_length")
    batching: str = _default("train_batching")
    embeddings: bool = _default("train_embeddings")  # False: the embedding table stays
    frozen_layers: int = _default("train_frozen_layers")  # lowest layers kept as they are
    layer_decay: float = _default("train_layer_decay")  # each layer's rate / the next's
    average: float = _default("train_average")  # share of the last steps averaged
    head_init: str = _default("train_head_init")  # "probe": from a logistic regression
    label_smoothing: float = _default("train_label_smoothing")
    seed: int = _default("seed")
    dtype: str = "float32"  # resolved ("auto" is not): "bfloat16" runs under torch.autocast

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_pool(hidden: Any, mask: Any) -> Any:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _supcon(vectors: Any, labels: Any, temperature: float = 0.1) -> Any:
    """Supervised contrastive loss of one batch (texts without a same-label partner skip)."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(vectors.float(), dim=-1)
    logits = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, -1e9)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    count = positive.sum(1)
    has = count > 0
    if not has.any():
        return (vectors * 0).sum()
    mean_pos = (log_prob * positive).sum(1)[has] / count[has]
    return -mean_pos.mean()


def fine_tune(
    base: str | os.PathLike,
    texts: Sequence[str],
    labels: np.ndarray,
    spec: TrainSpec,
    work: Path,
    *,
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``texts``/``labels`` and save it into ``work / "model"``.

    Parameters
    ----------
    base : path
        The base model's folder (a ``save_pretrained`` output).
    texts : sequence of str
        The model inputs (preprocessed and prefixed already).
    labels : ndarray of int
        Class indices ``0..n_classes-1``, one per text.
    spec : TrainSpec
        The training options.
    work : Path
        A folder private to this fine-tune: ``checkpoint.pt`` between epochs,
        ``model/`` at the end.
    device : str
        Where to train (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    progress : callable or None
        Called as ``progress(step, total_steps, loss)`` after each step.

    Returns
    -------
    dict
        ``{"seconds", "steps", "final_loss", "resumed_from_epoch"}``.
    """
    import torch

    # The user's random state is left as it was: training draws from a forked one.
    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(spec.seed)
        return _fine_tune(base, texts, labels, spec, work, device, progress)


def _fine_tune(base, texts, labels, spec: TrainSpec, work: Path, device: str, progress) -> dict:
    import torch
    from transformers import AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    t = _Trainer(base, spec, len(texts), int(labels.max()) + 1, device)
    ids = tokenizer(list(texts), truncation=True, max_length=spec.max_length)["input_ids"]
    y = torch.as_tensor(labels, dtype=torch.long)
    pad = tokenizer.pad_token_id or 0
    checkpoint = work / _CHECKPOINT
    first_epoch = t.resume(checkpoint) if checkpoint.is_file() else 0
    if first_epoch == 0 and spec.head_init == "probe" and spec.objective == "classification":
        t.probe(ids, labels, pad)
    loss = float("nan")
    for epoch in range(first_epoch, spec.epochs):
        for rows in _batches(ids, spec, torch.Generator().manual_seed(spec.seed + epoch)):
            loss = t.step(*_batch(ids, rows, pad), y[rows])
            if progress is not None:
                progress(t.steps, t.total, loss)
        t.save(checkpoint, epoch)
    t.finish()
    t.model.eval()
    with quiet_loading():  # no "Writing model shards" bar inside a fit
        t.model.save_pretrained(work / "model")
        tokenizer.save_pretrained(work / "model")
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "steps": t.steps,
        "final_loss": loss,
        "resumed_from_epoch": first_epoch,
    }


#: ``batching="length"``: texts are sorted by length within groups of this many batches.
GROUP_BATCHES = 64


def _batches(ids: list[list[int]], spec: TrainSpec, seeded: Any) -> list[list[int]]:
    """One epoch's batches (rows of ``ids``), from the seeded generator only.

    ``"random"``: consecutive texts of a random order. ``"length"``: the random order
    cut into groups of ``GROUP_BATCHES`` batches, each group sorted by length (ties keep
    the random order) and cut into batches, and all the batches in a random order: on
    UMSAB's training tweets the padded tokens fall from 1.70x the real ones to 1.02x.
    """
    import torch

    order = torch.randperm(len(ids), generator=seeded).tolist()
    size = spec.batch_size
    if spec.batching == "random":
        return [order[b : b + size] for b in range(0, len(order), size)]
    group = size * GROUP_BATCHES
    batches = []
    for g in range(0, len(order), group):
        rows = sorted(order[g : g + group], key=lambda r: len(ids[r]))
        batches += [rows[b : b + size] for b in range(0, len(rows), size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=seeded).tolist()]


def _batch(ids: list[list[int]], rows: list[int], pad: int) -> tuple[Any, Any]:
    """Token ids and attention mask of ``rows``, padded to the longest of them."""
    import torch

    width = max(len(ids[r]) for r in rows)
    batch = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, : len(ids[r])] = torch.as_tensor(ids[r])
        mask[i, : len(ids[r])] = 1
    return batch, mask


def encoder_layers(model: Any, option: str = "train_frozen_layers", off: str = "0") -> list[Any]:
    """The transformer layers of ``model``, lowest first: its module list as long as
    ``config.num_hidden_layers`` (``encoder.layer`` in BERT and XLM-R). ``option`` and
    ``off`` name, in the error, the option that needs them and its value that does not."""
    import torch

    n = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return list(module)
    raise ValueError(
        f"{option}: cannot find the {n} transformer layers of {type(model).__name__} "
        f"(no module list of that length); use {option}={off}."
    )


def _layer_groups(model: Any, decay: float) -> list[list[Any]]:
    """The trainable parameters grouped by depth from the top: [everything above the
    transformer layers (the trainer adds the head), the top layer, ..., the lowest layer,
    the embeddings]. With ``decay`` 1 (no layer-wise decay) one group holds them all, in
    the model's order."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if decay == 1.0:
        return [trainable]
    layers = encoder_layers(model, "train_layer_decay", "1.0")
    depth = {id(p): len(layers) - i for i, layer in enumerate(layers)
             for p in layer.parameters()}  # fmt: skip
    embeddings = model.get_input_embeddings()
    below = {id(p) for name, module in model.named_modules() if name.endswith("embeddings")
             for p in module.parameters()} | {id(p) for p in embeddings.parameters()}  # fmt: skip
    groups: list[list[Any]] = [[] for _ in range(len(layers) + 2)]
    for p in trainable:
        groups[depth.get(id(p), len(layers) + 1 if id(p) in below else 0)].append(p)
    return groups


class _Trainer:
    """The encoder, the head, AdamW and its schedule; one call of :meth:`step` per batch."""

    def __init__(self, base: Any, spec: TrainSpec, n_texts: int, n_classes: int, device: str):
        import torch
        from transformers import AutoModel

        from ..backends._loading import quiet_loading, warn_missing_weights

        self.spec, self.device, self.steps = spec, device, 0
        with quiet_loading():
            model, info = AutoModel.from_pretrained(str(base), output_loading_info=True)
        warn_missing_weights(str(base), info)
        self.model = model.to(device)
        self.model.train()
        self.head = torch.nn.Linear(self.model.config.hidden_size, n_classes).to(device)
        if not spec.embeddings:  # most of a step's optimizer work (docs/finetuning.md)
            self.model.get_input_embeddings().weight.requires_grad_(False)
        if spec.frozen_layers:  # at most the model's layers: checked before its load
            for layer in encoder_layers(self.model)[: spec.frozen_layers]:
                layer.requires_grad_(False)
        groups = _layer_groups(self.model, spec.layer_decay)
        if spec.objective == "classification":
            groups[0] += list(self.head.parameters())
        rated = [{"params": g, "lr": spec.learning_rate * spec.layer_decay**depth}
                 for depth, g in enumerate(groups) if g]  # fmt: skip
        self.params = [p for group in rated for p in group["params"]]
        self.optimizer = torch.optim.AdamW(rated, lr=spec.learning_rate, weight_decay=0.01)
        self.total = math.ceil(n_texts / spec.batch_size) * spec.epochs
        warmup = max(1, self.total // 10)
        decay = max(1, self.total - warmup)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min((s + 1) / warmup, max(0.0, (self.total - s) / decay))
        )
        # ``average``: a running mean of the encoder's trained weights over the last steps.
        self.encoder_params = [p for p in self.model.parameters() if p.requires_grad]
        self.average_from = self.total - max(1, round(self.total * spec.average))
        self.averaged: list[Any] = []
        self.n_averaged = 0

    def step(self, batch: Any, mask: Any, target: Any) -> float:
        """One training step on a batch; returns its loss. The three phases are separate
        methods so that ``benchmarks/finetune_steps.py`` times the step that ships."""
        loss = self.loss(batch, mask, target)
        self.backward(loss)
        self.update()
        return float(loss.detach())

    def loss(self, batch: Any, mask: Any, target: Any) -> Any:
        """The forward pass and the objective's loss (bfloat16 autocast per the spec)."""
        import torch

        batch, mask, target = batch.to(self.device), mask.to(self.device), target.to(self.device)
        with self._autocast():
            hidden = self.model(input_ids=batch, attention_mask=mask).last_hidden_state
            pooled = _mean_pool(hidden, mask)
            if self.spec.objective == "classification":
                return torch.nn.functional.cross_entropy(
                    self.head(pooled).float(), target, label_smoothing=self.spec.label_smoothing
                )
            return _supcon(pooled, target)

    def _autocast(self) -> Any:
        """bfloat16 autocast of the forward passes when the spec says so."""
        import torch

        kind = "cuda" if str(self.device).startswith("cuda") else "cpu"
        return torch.autocast(kind, dtype=torch.bfloat16, enabled=self.spec.dtype == "bfloat16")

    def backward(self, loss: Any) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def update(self) -> None:
        """Gradient clipping, the AdamW step and the schedule's."""
        import torch

        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.steps += 1
        if self.spec.average and self.steps > self.average_from:
            self._accumulate()

    def _accumulate(self) -> None:
        import torch

        with torch.no_grad():
            if not self.averaged:
                self.averaged = [p.detach().clone() for p in self.encoder_params]
            else:
                weight = 1.0 / (self.n_averaged + 1)  # the running mean's step
                for a, p in zip(self.averaged, self.encoder_params, strict=True):
                    a.lerp_(p, weight)
        self.n_averaged += 1

    def finish(self) -> None:
        """Put the averaged weights (``average`` > 0) into the encoder that is saved."""
        import torch

        if not self.averaged:
            return
        with torch.no_grad():
            for p, a in zip(self.encoder_params, self.averaged, strict=True):
                p.copy_(a)

    def probe(self, ids: list[list[int]], labels: np.ndarray, pad: int) -> None:
        """``head_init="probe"``: the head starts as a logistic regression (C=1) on the base
        model's mean-pooled features of the training texts, so that the first steps adapt
        the encoder to a head that already fits (LP-FT, Kumar et al. 2022)."""
        import torch
        from sklearn.linear_model import LogisticRegression

        self.model.eval()
        features = np.empty((len(ids), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda r: len(ids[r]))
        with torch.no_grad(), self._autocast():
            for b in range(0, len(order), 64):
                rows = order[b : b + 64]
                batch, mask = (t.to(self.device) for t in _batch(ids, rows, pad))
                hidden = self.model(input_ids=batch, attention_mask=mask).last_hidden_state
                features[rows] = _mean_pool(hidden, mask).float().cpu().numpy()
        self.model.train()
        lr = LogisticRegression(C=1.0, max_iter=2000).fit(features, labels)
        coef, intercept = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # two classes: sklearn's one row is the second class's logit
            coef, intercept = np.vstack([-coef, coef]) / 2, np.array([-1.0, 1.0]) * intercept / 2
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(coef, dtype=self.head.weight.dtype))
            self.head.bias.copy_(torch.as_tensor(intercept, dtype=self.head.bias.dtype))

    def resume(self, checkpoint: Path) -> int:
        """Load the state saved after an epoch; return the epoch to start from."""
        import torch

        state = torch.load(checkpoint, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.steps = int(state["step"])
        torch.set_rng_state(state["rng"])  # dropout continues as if never interrupted
        self.averaged = [a.to(self.device) for a in state.get("averaged", [])]
        self.n_averaged = int(state.get("n_averaged", 0))
        return int(state["epoch"]) + 1

    def save(self, path: Path, epoch: int) -> None:
        _save_checkpoint(path, self.model, self.head, self.optimizer, self.schedule, epoch,
                         self.steps, self.averaged, self.n_averaged)  # fmt: skip


def _save_checkpoint(path: Path, model, head, optimizer, schedule, epoch: int, step: int,
                     averaged: list | None = None, n_averaged: int = 0) -> None:  # fmt: skip
    """Write the state after ``epoch`` atomically (a kill mid-write keeps the previous one)."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    state = {
        "model": model.state_dict(), "head": head.state_dict(),
        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "epoch": epoch, "step": step, "rng": torch.get_rng_state(),
        "averaged": averaged or [], "n_averaged": n_averaged,
    }  # fmt: skip
    torch.save(state, tmp)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
