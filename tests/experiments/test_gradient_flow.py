"""Gradient-flow diagnostics."""

import torch

from parrnn.experiments.gradient_flow import compare_gradient_flow, gradient_flow
from parrnn.experiments.tasks import make_task
from parrnn.experiments.tasks.models import ModelSpec, build_model


def test_gradient_flow_shape_and_vanishing_for_a_gru():
    torch.manual_seed(0)
    task = make_task("adding", seq_len=150, test_size=8)
    model = build_model(task, ModelSpec(name="gru", hidden=16, layers=1))
    flow = gradient_flow(model, task, task.test.batch(range(8)))
    assert flow.shape == (150,) and bool((flow >= 0).all())
    assert flow[-1] > 100 * flow[0]  # far-away steps barely reach the loss at initialization


def test_compare_gradient_flow_writes_plot(tmp_path):
    flows = compare_gradient_flow(
        ["lstm", "sru"],
        seq_len=20,
        spec=ModelSpec(hidden=8, layers=1, sru_backend="reference"),
        batch_size=4,
        out=tmp_path,
    )
    assert set(flows) == {"lstm (init)", "sru (init)"} and all(len(v) == 20 for v in flows.values())
    assert (tmp_path / "gradflow.png").stat().st_size > 0 and (tmp_path / "gradflow.json").exists()
