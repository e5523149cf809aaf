"""A byte-level language model in the Hugging Face ecosystem: train with ``Trainer``, save, load with
``AutoModelForCausalLM``, generate with ``pipeline("text-generation")``.

The text is the char-LM task's (Python's own reference documentation, ``pydoc_data.topics``: no download); tokens
are UTF-8 bytes (`parrnn.hf.ByteTokenizer`, no vocabulary file). Needs ``pip install ".[hf]"`` from a parrnn checkout.

    python examples/hf_charlm.py                      # about a minute on 2 cores: a 3-block SRU LM
    python examples/hf_charlm.py --cell mingru        # any parrnn cell
    python examples/hf_charlm.py --tiny               # seconds (used by the test suite)
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset


class ByteWindows(Dataset):
    """Non-overlapping windows of ``length`` bytes; ``labels`` = ``input_ids`` (the model shifts them)."""

    def __init__(self, ids: torch.Tensor, length: int) -> None:
        count = ids.numel() // length
        self.rows = ids[: count * length].view(count, length)

    def __len__(self) -> int:
        return self.rows.size(0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="sru", help="parrnn cell (sru, srupp, qrnn, mingru, minlstm, hgrn)")
    parser.add_argument("--hidden-size", type=int, default=192)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--intermediate-size", type=int, default=384, help="SwiGLU MLP width (0: none)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--prompt", default="The assert statement ")
    parser.add_argument("--out", default="", help="where to save the model (default: a temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and a few steps (CI)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.hidden_size, args.num_layers, args.intermediate_size = 32, 2, 64
        args.seq_len, args.batch_size, args.steps = 64, 8, 20
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, pipeline

        import parrnn.hf
    except ImportError as error:  # the hf extra is optional
        print(f"skipped: {error} (pip install '.[hf]' from a parrnn checkout)")
        return {"skipped": str(error)}
    from parrnn.experiments.tasks.charlm import TEST_FRACTION, encode, load_text

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ids = encode(load_text())
    split = int(ids.numel() * (1 - TEST_FRACTION))
    train, test = ByteWindows(ids[:split], args.seq_len), ids[split:split + 8 * args.seq_len + 1]

    config = parrnn.hf.ParrnnConfig(cell=args.cell, vocab_size=256, hidden_size=args.hidden_size,
                                    num_layers=args.num_layers, intermediate_size=args.intermediate_size)
    model = AutoModelForCausalLM.from_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        training = TrainingArguments(
            output_dir=str(out / "trainer"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=max(1, args.steps // 20),
            weight_decay=0.01, max_grad_norm=1.0, logging_steps=max(1, args.steps // 10), save_strategy="no",
            report_to=[], use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=training, train_dataset=train)
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]

        model.save_pretrained(out / "model")
        parrnn.hf.ByteTokenizer().save_pretrained(out / "model")

        loaded = AutoModelForCausalLM.from_pretrained(out / "model").eval()
        tokenizer = AutoTokenizer.from_pretrained(out / "model")
        with torch.no_grad():  # held-out bits per character (byte)
            rows = test[:-1].view(8, -1)
            nll = loaded(rows, labels=rows).loss.item()
        generator = pipeline("text-generation", model=loaded, tokenizer=tokenizer, device="cpu")
        sample = generator(args.prompt, max_new_tokens=80 if not args.tiny else 16, do_sample=False)
        text = sample[0]["generated_text"]
    result = {"cell": args.cell, "first_loss": losses[0], "last_loss": losses[-1], "test_bpc": nll / math.log(2),
              "sample": text}
    print(f"{args.cell}: train loss {losses[0]:.3f} -> {losses[-1]:.3f}, held-out {result['test_bpc']:.3f} bpc")
    print(repr(text))
    return result


if __name__ == "__main__":
    main()
