"""Training: Trainer trains every cell, activation (gradient) checkpointing gives the same gradients, and
torch.compile of the model trains."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from parrnn.hf.mixers import Mixer  # noqa: E402
from tests.hf._models import CELLS, tiny_model  # noqa: E402


class Cycles(Dataset):
    """Sequences of a fixed cycle of 5 tokens from a random offset: learnable from the previous token."""

    def __init__(self, count: int = 64, length: int = 24) -> None:
        generator = torch.Generator().manual_seed(0)
        cycle = torch.tensor([3, 7, 1, 9, 4])
        offsets = torch.randint(0, 5, (count,), generator=generator)
        self.ids = cycle[(offsets.unsqueeze(1) + torch.arange(length)) % 5]

    def __len__(self) -> int:
        return self.ids.size(0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.mark.parametrize("cell", CELLS)
def test_trainer_trains_every_cell(cell: str, tmp_path) -> None:
    model = tiny_model(cell, vocab_size=12).train()
    checkpointing = cell in ("sru", "srupp")  # and through Trainer's activation checkpointing
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=25, per_device_train_batch_size=16,
                             learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, seed=0, dataloader_num_workers=0,
                             activation_checkpointing=checkpointing)
    trainer = Trainer(model=model, args=args, train_dataset=Cycles())
    trainer.train()
    assert model.is_activation_checkpointing == checkpointing
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 25
    assert losses[-1] < 0.5 * losses[0], losses


def _gradients(model, ids) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cell", ["sru", "srupp", "mingru"])
def test_activation_checkpointing_gives_the_same_gradients(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(cell, dtype=torch.float64).train()
    ids = torch.randint(0, 29, (3, 10))
    plain = _gradients(model, ids)
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    calls = []
    forward = type(model.model.layers[0].mixer).forward
    monkeypatch.setattr(type(model.model.layers[0].mixer), "forward",
                        lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    checkpointed = _gradients(model, ids)
    assert len(calls) == 2 * model.config.num_layers  # each block ran again in the backward
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


@pytest.mark.parametrize("cell", ["sru", "mingru"])
def test_torch_compile_of_the_model_trains(cell: str) -> None:
    torch._dynamo.reset()
    eager = tiny_model(cell).train()
    compiled_model = tiny_model(cell).train()
    compiled = torch.compile(compiled_model, backend="aot_eager")
    ids = torch.randint(0, 29, (4, 12))
    losses = {}
    for name, model, params in (("eager", eager, eager.parameters()),
                                ("compiled", compiled, compiled_model.parameters())):
        optimizer = torch.optim.SGD(params, lr=0.5)
        losses[name] = []
        for _ in range(3):
            optimizer.zero_grad()
            loss = model(ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
    torch.testing.assert_close(torch.tensor(losses["compiled"]), torch.tensor(losses["eager"]), rtol=1e-4,
                               atol=1e-5)
    assert losses["compiled"][-1] < losses["compiled"][0]
    assert isinstance(compiled_model.model.layers[0].mixer, Mixer)
