"""XLMTFineTunedVectorizer: a featurizer whose ``fit(X, y)`` adapts the encoder to the labels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._options import DEFAULT_MODEL
from ._vectorizer import XLMTVectorizer

__all__ = ["XLMTFineTunedVectorizer"]


class XLMTFineTunedVectorizer(XLMTVectorizer):
    """Pooled features of an encoder fine-tuned on the labels, once per training set.

    ``fit(X, y)`` fine-tunes ``model`` on the texts and labels (torch, CPU or
    GPU), saves the adapted encoder in a folder keyed by the base model's
    content, the (text, label) pairs and the training options, and pins it;
    ``transform`` is :class:`XLMTVectorizer`'s on the adapted encoder (every
    backend, precision and cache option works; cached vectors are keyed by the
    adapted weights' content, so they never mix with the base model's). A
    second ``fit`` on the same data with the same training options reuses the
    folder: a GridSearchCV over the classifier or the pooling fine-tunes once
    per fold. The parameters are :class:`XLMTVectorizer`'s (``model`` is the
    base model; ``device`` is also where the fine-tune runs) and the training
    ones after them.

    ``fit_transform(X, y)`` (what a Pipeline calls) returns the adapted
    encoder's features of ``X``; with ``cv`` set it returns **cross-fitted**
    ones instead: each fold's rows are encoded by an encoder fine-tuned without
    them (as scikit-learn's ``TargetEncoder`` does). Cross-fitting scored lower
    on validation data in every measurement (most with few training texts,
    where the fold encoders' feature spaces differ most), so it is off by
    default; docs/finetuning.md has the measurements.

    Parameters
    ----------
    objective : {"classification", "contrastive"}, default="classification"
        The training loss, per batch: cross-entropy of a linear head on the
        mean-pooled last layer (the head is dropped afterwards), or a
        supervised contrastive loss on the mean-pooled vectors.
    epochs : int, default=2
        Passes over the training texts.
    learning_rate : float, default=0.0002
        AdamW's peak learning rate (10% linear warm-up, then linear decay): the
        top layer's and the head's, with ``train_layer_decay`` below. With the
        default decay, 2e-4 had the best validation score of the recipes measured
        on UMSAB with multilingual-e5-small (docs/finetuning.md); without decay,
        use a rate near 3e-5.
    train_batch_size : int, default=16
        Texts per training step.
    train_max_length : int, default=96
        Tokens per training text (longer ones are truncated while training).
    train_batching : {"random", "length"}, default="random"
        How each epoch cuts the shuffled training texts into batches:
        ``"random"``: consecutive texts of the shuffled order; ``"length"`` sorts
        them by length within groups of 64 batches, so that a batch pads few
        tokens, and runs the batches in a shuffled order (faster; see
        docs/finetuning.md for its measured quality).
    train_embeddings : bool, default=False
        Whether the fine-tune updates the word-embedding table. False (the default)
        keeps it as in the base model: for XLM-R-sized vocabularies most of a
        training step is AdamW's update of that table, and freezing it trained
        eight UMSAB languages about 4x faster at the same macro-F1
        (docs/finetuning.md has the measurements).
    train_frozen_layers : int, default=0
        The lowest transformer layers the fine-tune keeps as in the base model
        (their weights get no gradient); the embeddings follow
        ``train_embeddings``. 0 trains every layer.
    train_layer_decay : float in (0, 1], default=0.8
        Layer-wise learning-rate decay: the top transformer layer (and the head)
        trains at ``learning_rate``, each layer below at ``train_layer_decay`` times
        the rate of the layer above, the embeddings below the lowest layer. 1.0
        trains every layer at the same rate (needed for an encoder whose layer
        list cannot be found: the error says so).
    train_average : float in [0, 1), default=0.0
        The share of the last training steps whose encoder weights are averaged
        into the adapted encoder (a running mean after each of those steps, as in
        stochastic weight averaging); 0 keeps the last step's weights.
    train_head_init : {"random", "probe"}, default="random"
        The classification head's starting weights: random (from ``seed``), or
        ``"probe"``: a logistic regression (C=1) on the base model's mean-pooled
        features of the training texts, so that training starts from a head
        that already fits (LP-FT). One forward pass over the training texts more.
    train_label_smoothing : float in [0, 1), default=0.0
        Label smoothing of the classification objective's cross-entropy.
        ``train_head_init`` and ``train_label_smoothing`` apply to the
        classification objective only: under ``objective="contrastive"`` they must
        stay at their defaults (``fit`` raises ``ValueError`` otherwise).
        None of these three beat the default recipe on UMSAB's validation
        split; ``"probe"`` lost 2.6 points on english test (docs/finetuning.md,
        "Recipe options").
    seed : int, default=0
        Seeds the head's initial weights, dropout and each epoch's text order:
        the same data and options give the same adapted weights.
    train_dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Precision of the fine-tune's matrix products: ``"bfloat16"`` runs the
        forward passes under ``torch.autocast`` (weights and optimizer stay
        float32). ``"auto"``: bfloat16 on CPUs with AMX or AVX-512 BF16 (where
        torch's ``dtype="auto"`` is bfloat16 too) and on GPUs with bfloat16,
        float32 elsewhere (docs/finetuning.md has the measurements).
    cv : int or None, default=None
        Folds of the cross-fitting in ``fit_transform`` (stratified, shuffled
        with ``seed``; ``cv`` more fine-tunes); None: ``fit(X, y).transform(X)``.
    adapted_dir : str, os.PathLike or None, default=None
        Where adapted encoders are kept; None: ``XLMT_SKLEARN_ADAPTED_DIR``,
        else ``~/.cache/xlmt_sklearn/adapted``.
    store_weights_in_pickle : bool, default=False
        Carry the adapted encoder's files in the pickle (about the model's
        size), so that it unpickles on a machine without the folder. Off: the
        pickle names the folder by content key, and the folder must be there.

    Attributes
    ----------
    classes_ : ndarray
        The labels seen by ``fit``.
    adapted_path_ : str
        The adapted encoder's folder.
    training_ : dict
        What the fine-tune recorded: seconds, steps, final loss, the epoch it
        resumed from, and whether this ``fit`` trained or reused it
        (``"trained"``).
    model_identity_, backend_, layers_, cache_layers_, n_features_out_
        As in :class:`XLMTVectorizer`, for the adapted encoder.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> clf = make_pipeline(XLMTFineTunedVectorizer(epochs=2), LogisticRegression())
    >>> clf.fit(texts, labels)  # doctest: +SKIP
    """

    _option_kind = "adapted"

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        pooling: str = "mean",
        layers: int | list[int] = -1,
        layer_aggregation: str = "mean",
        normalize: bool = False,
        preprocess: Any = "xlmt",
        prefix: str | None = None,
        max_length: int = 128,
        truncation: str = "warn",
        stride: int | None = None,
        missing: str = "error",
        batch_size: int = 32,
        max_tokens: int | str | None = "auto",
        device: str | list[str] = "auto",
        backend: str = "auto",
        dtype: str = "auto",
        quantize: str | None = None,
        calibration_texts: Any = None,
        compile: bool = False,
        cache: Any = None,
        cache_layers: str | list[int] | None = None,
        progress: bool | str = "auto",
        trust_remote_code: bool = False,
        objective: str = "classification",
        epochs: int = 2,
        learning_rate: float = 2e-4,
        train_batch_size: int = 16,
        train_max_length: int = 96,
        train_batching: str = "random",
        train_embeddings: bool = False,
        train_frozen_layers: int = 0,
        train_layer_decay: float = 0.8,
        train_average: float = 0.0,
        train_head_init: str = "random",
        train_label_smoothing: float = 0.0,
        seed: int = 0,
        train_dtype: str = "auto",
        cv: int | None = None,
        adapted_dir: str | os.PathLike | None = None,
        store_weights_in_pickle: bool = False,
    ):
        super().__init__(
            model, revision=revision, pooling=pooling, layers=layers,
            layer_aggregation=layer_aggregation, normalize=normalize, preprocess=preprocess,
            prefix=prefix, max_length=max_length, truncation=truncation, stride=stride,
            missing=missing, batch_size=batch_size, max_tokens=max_tokens, device=device,
            backend=backend, dtype=dtype, quantize=quantize,
            calibration_texts=calibration_texts, compile=compile, cache=cache,
            cache_layers=cache_layers, progress=progress, trust_remote_code=trust_remote_code,
        )  # fmt: skip
        self.objective = objective
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.train_batch_size = train_batch_size
        self.train_max_length = train_max_length
        self.train_batching = train_batching
        self.train_embeddings = train_embeddings
        self.train_frozen_layers = train_frozen_layers
        self.train_layer_decay = train_layer_decay
        self.train_average = train_average
        self.train_head_init = train_head_init
        self.train_label_smoothing = train_label_smoothing
        self.seed = seed
        self.train_dtype = train_dtype
        self.cv = cv
        self.adapted_dir = adapted_dir
        self.store_weights_in_pickle = store_weights_in_pickle

    # ----------------------------------------------------------------- public
    def fit(self, X: Any, y: Any = None) -> XLMTFineTunedVectorizer:
        """Fine-tune the encoder on ``X``/``y`` (or reuse the same fine-tune) and pin it.

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
            The training texts.
        y : array-like of shape (n_texts,)
            Their labels (any hashable values; at least two classes).

        Returns
        -------
        self : XLMTFineTunedVectorizer
        """
        self._validate_params()
        self._check_objective_options()
        texts, labels = self._training_data(X, y)
        folder, _trained = self._adapt(texts, labels)
        self._pin_model(model=str(folder))
        self._fit_widths()
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit on all of ``X``; return cross-fitted features of ``X`` when ``cv`` is set.

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
        y : array-like of shape (n_texts,)
        **fit_params : dict
            Unused (scikit-learn's signature).

        Returns
        -------
        ndarray of shape (n_texts, n_features_out_), float32
        """
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold

        from .flow._inputs import rows_of

        if not hasattr(X, "__len__"):  # an iterator: read once, used below again
            X = rows_of(X)
        self.fit(X, y)
        if self.cv is None:
            return self.transform(X)
        rows = rows_of(X)
        y_arr = np.asarray(y)
        out = np.zeros((len(rows), self.n_features_out_), dtype=np.float32)
        folds = StratifiedKFold(int(self.cv), shuffle=True, random_state=int(self.seed))
        for train, held in folds.split(np.zeros(len(y_arr)), y_arr):
            fold = clone(self).fit([rows[i] for i in train], y_arr[train])
            out[held] = fold.transform([rows[i] for i in held])
        return out

    # ---------------------------------------------------------------- private
    def _training_data(self, X: Any, y: Any) -> tuple[list[str], np.ndarray]:
        """The model inputs (preprocessed, prefixed) and label indices; ``classes_`` set."""
        from sklearn.utils.multiclass import check_classification_targets

        from .flow._inputs import as_texts
        from .flow._preprocess import prepare

        name = type(self).__name__
        if y is None:
            raise ValueError(
                f"{name}.fit needs the labels: fit(X, y). For features of the pretrained "
                "encoder without labels, use XLMTVectorizer."
            )
        batch = as_texts(X, missing=self.missing)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(batch.texts):
            raise ValueError(
                f"{name}.fit: y must hold one label per text; got shape {y.shape} for "
                f"{len(batch.texts)} texts."
            )
        check_classification_targets(y)
        rows = batch.encoded_rows(self.missing)  # missing="zeros": those rows don't train
        self.classes_, index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{name}.fit needs at least two classes in y; got {self.classes_}.")
        raw = [batch.texts[r] for r in rows]
        inputs, _ = prepare(raw, self.preprocess, self.prefix, list(range(len(raw))))
        return list(inputs), index[rows].astype(np.int64)

    def _check_objective_options(self) -> None:
        """Refuse the classification objective's options under another objective: they
        would change the adapted key (a second fine-tune of equal weights) and nothing else."""
        from ._options import OPTIONS

        if self.objective == "classification":
            return
        defaults = {o.name: o.default for o in OPTIONS
                    if o.name in ("train_head_init", "train_label_smoothing")}  # fmt: skip
        unused = {name: getattr(self, name) for name in defaults
                  if getattr(self, name) != defaults[name]}  # fmt: skip
        if unused:
            them = "them" if len(unused) > 1 else "it"
            raise ValueError(
                f"{', '.join(f'{n}={v!r}' for n, v in unused.items())}: only the "
                f"classification objective uses {them}, and objective={self.objective!r} would "
                f"ignore {them}; leave {', '.join(f'{n}={defaults[n]!r}' for n in unused)} or "
                f"use objective='classification'."
            )

    def _adapt(self, texts: list[str], labels: np.ndarray) -> tuple[Path, bool]:
        """The adapted folder for this training set (fine-tuned now unless it exists)."""
        from ._model import resolve_identity
        from .adapt._folder import adapted_key, adapted_root, ensure_adapted, read_info
        from .adapt._train import TrainSpec

        base, base_dir = resolve_identity(self.model, self.revision)
        n_layers = base.num_hidden_layers
        if self.train_frozen_layers > n_layers:  # before the model load and the fine-tune
            raise ValueError(
                f"train_frozen_layers={self.train_frozen_layers} is more than the {n_layers} "
                f"transformer layers of the model; use at most {n_layers}."
            )
        device = self._train_device()
        spec = TrainSpec(
            objective=self.objective, epochs=int(self.epochs),
            learning_rate=float(self.learning_rate), batch_size=int(self.train_batch_size),
            max_length=int(self.train_max_length), batching=self.train_batching,
            embeddings=bool(self.train_embeddings),
            frozen_layers=int(self.train_frozen_layers),
            layer_decay=float(self.train_layer_decay), average=float(self.train_average),
            head_init=self.train_head_init,
            label_smoothing=float(self.train_label_smoothing), seed=int(self.seed),
            dtype=self._resolved_train_dtype(device),
        )  # fmt: skip
        key = adapted_key(base.content_hash, texts, labels, spec)
        info = {"base": base.name, "base_content": base.content_hash,
                "classes": [str(c) for c in self.classes_]}  # fmt: skip
        folder, trained = ensure_adapted(
            adapted_root(self.adapted_dir), key, base_dir, texts, labels, spec, info=info,
            device=device, progress=self._train_progress(),
        )  # fmt: skip
        self.adapted_path_ = str(folder)
        self.training_ = {**read_info(folder), "trained": trained}
        return folder, trained

    def _resolved_train_dtype(self, device: str) -> str:
        """``train_dtype`` with "auto" decided for ``device`` (part of the adapted key)."""
        import torch

        from .backends._auto import auto_rule

        if self.train_dtype != "auto":
            return str(self.train_dtype)
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
        # The CPU classes where torch's bf16 is the faster (docs/finetuning.md).
        return auto_rule().torch_dtype

    def _train_device(self) -> str:
        import torch

        device = self.device[0] if isinstance(self.device, (list, tuple)) else self.device
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return str(device)

    def _train_progress(self) -> Any:
        import sys

        if self.progress is False or (self.progress == "auto" and not sys.stderr.isatty()):
            return None
        from tqdm.auto import tqdm

        bar: dict[str, Any] = {}

        def update(step: int, total: int, loss: float) -> None:
            if "bar" not in bar:
                bar["bar"] = tqdm(total=total, desc="fine-tuning", unit="step", initial=step - 1)
            bar["bar"].update(1)
            bar["bar"].set_postfix(loss=f"{loss:.3f}")
            if step == total:
                bar["bar"].close()

        return update

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        path = state.get("adapted_path_")
        if self.store_weights_in_pickle and path and Path(path).is_dir():
            state["_adapted_files_"] = {
                p.name: p.read_bytes() for p in sorted(Path(path).iterdir()) if p.is_file()
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        files = state.pop("_adapted_files_", None)
        if files and "adapted_path_" in state and not Path(state["adapted_path_"]).is_dir():
            state = _restore_folder(state, files)
        if "adapted_path_" in state:  # a use, for `xlmt-sklearn adapted prune --unused-days`
            from .adapt._folder import mark_used

            mark_used(Path(state["adapted_path_"]))
        super().__setstate__(state)


def _restore_folder(state: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    """Write a pickled adapted encoder under this machine's adapted root; re-point to it."""
    import dataclasses

    from .adapt._folder import adapted_root

    key = Path(state["adapted_path_"]).name
    folder = adapted_root(state.get("adapted_dir")) / key
    if not folder.is_dir():
        tmp = folder.with_name(f".unpickle-{key}-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process restored it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    state = dict(state)
    state["adapted_path_"] = str(folder)
    ident = state.get("model_identity_")
    if ident is not None:
        state["model_identity_"] = dataclasses.replace(ident, name=str(folder))
    return state


def _pooled_parameters() -> str:
    """XLMTVectorizer's documented parameters (the base options), for this class's docstring."""
    import inspect

    doc = inspect.getdoc(XLMTVectorizer) or ""
    block = doc.split("Parameters\n----------\n", 1)[1].split("\n\nAttributes", 1)[0]
    return "\n".join("    " + line if line else line for line in block.splitlines())


# At run time (help(), the tests) the docstring lists XLMTVectorizer's parameters too; the
# docs site reads the source, which documents the training ones and points to XLMTVectorizer.
_HEADER = "    Parameters\n    ----------\n"
XLMTFineTunedVectorizer.__doc__ = (XLMTFineTunedVectorizer.__doc__ or "").replace(
    _HEADER, _HEADER + _pooled_parameters() + "\n", 1
)
