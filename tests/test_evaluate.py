"""``evaluate``: accuracy and loss compared with numbers computed here, flip TTA included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_lib.data import ArrayDataset
from attn_lib.training import evaluate

MEAN, STD = (0.3, 0.5, 0.7), (0.2, 0.25, 0.1)


class LinearOnPixels(nn.Module):
    """Logits = a fixed linear map of the normalised pixels; mirror images get other logits."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def test_evaluate_matches_accuracy_and_loss_computed_by_hand():
    torch.manual_seed(0)
    model = LinearOnPixels()
    with torch.no_grad():
        model.linear.weight.mul_(3)  # confident, different predictions per image
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    data = ArrayDataset(images, labels, ["a", "b", "c", "d"], MEAN, STD)
    # By hand: normalise with the data set's statistics, classify, mirror along the width.
    x = (images.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None,
                                                                                       None]
    with torch.no_grad():
        logits, mirrored = model(x), model(x.flip(-1))
    probs = (logits.softmax(1) + mirrored.softmax(1)) / 2
    expected = {
        "loss": F.cross_entropy(logits, labels).item(),
        "acc": (logits.argmax(1) == labels).float().mean().item(),
        "loss_tta": F.nll_loss(probs.log(), labels).item(),
        "acc_tta": (probs.argmax(1) == labels).float().mean().item(),
        "n": 10,
    }
    # The test can tell the cases apart: TTA changes both numbers, and accuracy is not 0 or 1.
    assert expected["acc"] != expected["acc_tta"] and 0 < expected["acc"] < 1
    assert abs(expected["loss"] - expected["loss_tta"]) > 0.1
    model.train()
    got = evaluate(model, data, tta=True, batch_size=3)  # the last batch holds one image
    assert model.training  # mode restored
    assert got == pytest.approx(expected, abs=1e-5)
