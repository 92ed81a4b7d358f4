"""One training step (``train_step``) by value: the loss it returns and the update it makes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_lib.models.attn_vgg import ModelOutput
from attn_lib.training.epoch import train_step


class TinyClassifier(nn.Module):
    """A linear classifier returning ``ModelOutput``, as the attention models do."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(self.linear(x), ())


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_train_step_returns_the_loss_and_makes_one_sgd_update(scaled, smoothing):
    torch.manual_seed(0)
    model = TinyClassifier()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    # The expected step, by hand: loss and gradients of a copy, then p - lr * grad.
    reference = TinyClassifier()
    reference.load_state_dict(model.state_dict())
    expected_logits = reference(x).logits
    expected_loss = F.cross_entropy(expected_logits, y, label_smoothing=smoothing)
    grads = torch.autograd.grad(expected_loss, list(reference.parameters()))
    expected = [p.detach() - 0.1 * g for p, g in zip(reference.parameters(), grads)]
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)  # stale gradients must be cleared, not added to
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=scaled)
    loss, logits = train_step(model, x, y, optimizer, scaler, torch.device("cpu"), "fp32",
                              label_smoothing=smoothing)
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(logits, expected_logits)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)


def test_train_step_computes_the_loss_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = TinyClassifier()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss, logits = train_step(model, x, y, optimizer, scaler, torch.device("cpu"), "bf16")
    assert logits.dtype == torch.bfloat16  # the forward pass ran under autocast
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), y))
