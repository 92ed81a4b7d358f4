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


def _data(n: int) -> ArrayDataset:
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(n))
    return ArrayDataset(images, torch.arange(n) % 4, ["a", "b", "c", "d"], MEAN, STD)


def test_evaluate_takes_a_data_set_a_look_alike_or_batches_and_refuses_the_rest():
    from attn_lib.data import DeviceLoader

    class LookAlike:  # images, labels, statistics and a length, but not an ArrayDataset
        def __init__(self, ds: ArrayDataset) -> None:
            self.images, self.labels, self.mean, self.std = ds.images, ds.labels, ds.mean, ds.std

        def __len__(self) -> int:
            return len(self.labels)

    torch.manual_seed(0)
    model, data = LinearOnPixels(), _data(5)
    reference = evaluate(model, data, batch_size=2)
    assert evaluate(model, LookAlike(data), batch_size=2) == reference
    batches = DeviceLoader(data, 2, train=False, device=torch.device("cpu"))
    assert evaluate(model, batches) == reference  # an iterable of batches is used as it is
    assert evaluate(model, list(batches)) == reference
    one = evaluate(model, _data(1))
    assert one["n"] == 1 and one["acc"] in (0.0, 1.0)
    with pytest.raises(ValueError,
                       match=r"^expected .* iterable of \(images, labels\) batches, got int$"):
        evaluate(model, 42)
    with pytest.raises(ValueError, match="^cannot evaluate on an empty data set$"):
        evaluate(model, [])
