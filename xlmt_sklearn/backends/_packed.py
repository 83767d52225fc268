"""The packed (padding-free) forward of BERT-family encoders on the CPU.

BERT-family encoders (BERT, RoBERTa, XLM-R, CamemBERT as shipped with
transformers) run here without padding: the tokens of a batch are
concatenated, every linear layer runs once on all real tokens (query/key/value
fused into one matmul, also for torch.ao int8 weights), and only attention
sees a padded layout. The same modules and weights compute the same numbers as
``model(input_ids, attention_mask)`` (float noise, < 1e-5), with no FLOPs
spent on padding and far fewer framework calls; docs/benchmarks.md has the
measurements. :class:`~xlmt_sklearn.backends._encoders.TorchEncoder` uses it where
:meth:`PackedForward.of` accepts the model; everything else (GPUs, other
architectures, compiled models, models with user forward hooks) runs the
model itself on padded batches.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._state import owns

__all__ = ["PackedForward", "fuse_int8_qkv"]

_PACKED_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})
_ROBERTA_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert"})
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _has_hooks(model: torch.nn.Module) -> bool:
    """Whether anyone observes ``model.forward`` (its hooks must keep firing)."""
    from torch.nn.modules import module as nn_module

    return bool(
        model._forward_hooks
        or model._forward_pre_hooks
        or nn_module._global_forward_hooks
        or nn_module._global_forward_pre_hooks
    )


def _packable(model) -> bool:
    """True for the stock transformers BERT-family encoders in eval mode."""
    cfg = getattr(model, "config", None)
    if cfg is None or not isinstance(model, torch.nn.Module) or model.training:
        return False
    if hasattr(model, "_orig_mod"):  # torch.compile wrapper: keep the compiled graph
        return False
    if getattr(cfg, "model_type", None) not in _PACKED_MODEL_TYPES:
        return False
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return False
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return False
    emb, enc = getattr(model, "embeddings", None), getattr(model, "encoder", None)
    if emb is None or enc is None or not hasattr(enc, "layer"):
        return False
    # Only transformers' own classes: remote code may reuse names with other maths.
    mods = [emb, *enc.layer]
    if not all(type(m).__module__.startswith("transformers.models.") for m in mods):
        return False
    need_emb = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
    if not all(hasattr(emb, a) for a in need_emb):
        return False
    for layer in enc.layer:
        try:
            sa, ao = layer.attention.self, layer.attention.output
            parts = (sa.query, sa.key, sa.value, ao.dense, ao.LayerNorm,
                     layer.intermediate.dense, layer.intermediate.intermediate_act_fn,
                     layer.output.dense, layer.output.LayerNorm)  # fmt: skip
        except AttributeError:
            return False
        if any(p is None for p in parts) or not hasattr(sa, "attention_head_size"):
            return False
    return True


def fuse_int8_qkv(mods) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """One int8 matmul for three dynamically quantized linears (torch.ao), or None.

    The int8 weights and their scales are concatenated unchanged (a per-tensor
    scale becomes the same scale on every row of a per-channel weight), and
    the activation is quantized once per call, as each module would do: the
    result equals the three separate calls up to float rounding, and the input
    is quantized once instead of three times.
    """
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynLinear
    except ImportError:  # pragma: no cover - torch without torch.ao
        return None
    if not all(type(m) is DynLinear and m._packed_params.dtype == torch.qint8 for m in mods):
        return None
    versions = {m.version for m in mods}
    if len(versions) != 1:
        return None
    version = versions.pop()
    reduce_range = not (version is None or version < 4)  # as DynLinear.forward
    ints, scales, zeros, biases = [], [], [], []
    for m in mods:
        w, b = m._packed_params._weight_bias()
        if b is None:
            return None
        if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            n = w.shape[0]
            scales.append(torch.full((n,), w.q_scale(), dtype=torch.float64))
            zeros.append(torch.full((n,), w.q_zero_point(), dtype=torch.int64))
        elif w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) and (
            w.q_per_channel_axis() == 0
        ):
            scales.append(w.q_per_channel_scales().to(torch.float64))
            zeros.append(w.q_per_channel_zero_points().to(torch.int64))
        else:
            return None
        ints.append(w.int_repr())
        biases.append(b)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks quantized tensors as deprecated
        qw = torch._make_per_channel_quantized_tensor(
            torch.cat(ints), torch.cat(scales), torch.cat(zeros), 0
        )
        packed = torch.ops.quantized.linear_prepack(qw, torch.cat(biases))

    def qkv(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=reduce_range).to(x.dtype)

    return qkv


def _plain_linear(m) -> bool:
    return (
        type(m) is torch.nn.Linear
        and type(m.weight.data) is torch.Tensor
        and m.bias is not None
        and type(m.bias.data) is torch.Tensor
    )


class PackedForward:
    """Padding-free forward of a BERT-family encoder (see the module docstring).

    Built once per model (memoized on the model object). Holds a fused
    query/key/value projection per layer: one weight for plain ``nn.Linear``
    (an extra copy of those weights, ~7% of XLM-R base), one int8 weight for
    torch.ao dynamically quantized ones; other layers call the three modules.
    """

    def __init__(self, model):
        cfg = model.config
        self.model = model
        self.pad_id = int(cfg.pad_token_id) if cfg.pad_token_id is not None else 0
        self.roberta_positions = cfg.model_type in _ROBERTA_POSITIONS
        self.heads = int(cfg.num_attention_heads)
        self.fused: list[Callable[[torch.Tensor], torch.Tensor] | None] = []
        self.stamp = self._stamp()
        with torch.no_grad():
            for layer in model.encoder.layer:
                sa = layer.attention.self
                mods = (sa.query, sa.key, sa.value)
                if all(_plain_linear(m) for m in mods):
                    w = torch.cat([m.weight for m in mods], 0)
                    b = torch.cat([m.bias for m in mods], 0)
                    self.fused.append(lambda x, w=w, b=b: F.linear(x, w, b))
                else:
                    self.fused.append(fuse_int8_qkv(mods))

    def _stamp(self) -> tuple:
        """Identity of the q/k/v weights: rebuild the fused copy if they change.

        Storage address, shape, dtype and version counter of each plain weight
        (replaced tensors and in-place updates both show); quantized modules and
        tensor subclasses by object identity.
        """
        out: list[object] = []
        for layer in self.model.encoder.layer:
            sa = layer.attention.self
            for m in (sa.query, sa.key, sa.value):
                w = getattr(m, "weight", None)
                if not isinstance(w, torch.Tensor) or type(w.data) is not torch.Tensor:
                    # Quantized (packed params) or subclass weights: the objects.
                    wid = id(w) if isinstance(w, torch.Tensor) else None  # not a bound method
                    out.append((id(m), id(getattr(m, "_packed_params", None)), wid))
                    continue
                try:
                    version = w._version
                except RuntimeError:  # inference tensors have no version counter
                    version = None
                out.append((w.data_ptr(), tuple(w.shape), w.dtype, str(w.device), version))
        return tuple(out)

    @classmethod
    def of(cls, model) -> PackedForward | None:
        """The packed runner of ``model``, or None when it must run as is (also when
        ``XLMT_SKLEARN_PACKED=0``: the model's own forward on padded batches)."""
        from .._env import env_flag

        if not env_flag("XLMT_SKLEARN_PACKED", True) or not _packable(model) or _has_hooks(model):
            return None
        runner = _PACKED.get(model)
        if runner is None or runner.stamp != runner._stamp():
            runner = cls(model)
            _PACKED[model] = runner
        return runner

    def __call__(
        self, rows: list[list[int]], layers: tuple[int, ...]
    ) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        """Hidden states of ``layers`` as padded (batch, seq, hidden) tensors + mask.

        Padding positions hold zeros (the model's own output there is noise
        that every consumer masks out). Indices are those of transformers'
        ``hidden_states`` (0 = embeddings); unrequested entries are None.
        """
        model = self.model
        emb = model.embeddings
        dev = emb.word_embeddings.weight.device
        n_layers = len(model.encoder.layer)
        wanted = {i % (n_layers + 1) for i in layers}
        lens_np = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        n_tok = int(lens_np.sum())
        ids = torch.from_numpy(
            np.fromiter((t for r in rows for t in r), dtype=np.int64, count=n_tok)
        ).to(dev)
        lens = torch.from_numpy(lens_np).to(dev)
        b, s = len(rows), int(lens_np.max())
        seg = torch.repeat_interleave(torch.arange(b, device=dev), lens)
        starts = torch.cumsum(lens, 0) - lens
        local = torch.arange(n_tok, device=dev) - starts[seg]
        if self.roberta_positions:
            # transformers' create_position_ids_from_input_ids, row by row:
            # non-pad tokens count up from pad_id + 1; pad tokens get pad_id.
            real = (ids != self.pad_id).long()
            csum = torch.cumsum(real, 0)
            before = (csum[starts] - real[starts])[seg]
            pos = (csum - before) * real + self.pad_id
        else:
            pos = local
        x = emb.word_embeddings(ids) + emb.token_type_embeddings.weight[0]
        x = emb.LayerNorm(x + emb.position_embeddings(pos))
        flat = seg * s + local  # row of each real token in the padded (b * s) layout
        key_mask = (torch.arange(s, device=dev)[None, :] < lens[:, None])[:, None, None, :]
        states: dict[int, torch.Tensor] = {0: x} if 0 in wanted else {}
        hidden = x.shape[1]
        for i, layer in enumerate(model.encoder.layer):
            x = self._layer(layer, self.fused[i], x, flat, key_mask, b, s, hidden)
            if i + 1 in wanted:
                states[i + 1] = x
        out: list[torch.Tensor | None] = [None] * (n_layers + 1)
        for i, st in states.items():
            pad = st.new_zeros(b * s, hidden)
            pad[flat] = st
            out[i] = pad.view(b, s, hidden)
        mask = key_mask.view(b, s).to(torch.int64)
        return out, mask

    def _layer(self, layer, fused, x, flat, key_mask, b: int, s: int, hidden: int):
        sa = layer.attention.self
        heads, d = self.heads, int(sa.attention_head_size)
        qkv = x.new_zeros(b * s, 3, heads * d)
        if fused is not None:
            qkv[flat] = fused(x).view(-1, 3, heads * d)
        else:
            for j, proj in enumerate((sa.query, sa.key, sa.value)):
                qkv[flat, j] = proj(x)
        q, k, v = qkv.view(b, s, 3, heads, d).permute(2, 0, 3, 1, 4)
        scale = getattr(sa, "scaling", None)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=scale)
        att = att.transpose(1, 2).reshape(b * s, heads * d)[flat]
        ao = layer.attention.output
        x = ao.LayerNorm(ao.dense(att) + x)
        inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
        out = layer.output
        return out.LayerNorm(out.dense(inter) + x)


@owns("packed_weights")
def _reset_packed() -> None:
    _PACKED.clear()
