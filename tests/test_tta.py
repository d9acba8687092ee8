"""Test-time augmentation against a hand-written flip-and-average."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import Learner, accuracy
from onecycle.data import Loader
from onecycle.errors import ConfigError
from onecycle.tta import hflip, identity, shift, views


def _learner() -> Learner:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 1, 6, 6, generator=g)
    y = (x[:, 0, :, :3].sum((1, 2)) > x[:, 0, :, 3:].sum((1, 2))).long()  # left vs right
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64, 2))  # fmt: skip
    learn = Learner(model, Loader(x, y, 32), Loader(x, y, 40, shuffle=False),
                    loss_func=F.cross_entropy, metrics=[accuracy], progress=False)  # fmt: skip
    learn.fit_one_cycle(2, 0.05)
    return learn


def _by_hand(learn: Learner) -> tuple[torch.Tensor, torch.Tensor]:
    """The flip-and-average, written out: eval mode, both views, the mean of the logits."""
    learn.model.eval()
    outs, ys = [], []
    with torch.no_grad():
        for xb, yb in learn.valid_data:
            outs.append((learn.model(xb) + learn.model(torch.flip(xb, dims=[3]))) / 2)
            ys.append(yb)
    return torch.cat(outs), torch.cat(ys)


def test_get_preds_with_flip_is_the_hand_written_flip_and_average():
    learn = _learner()
    want, targets = _by_hand(learn)
    learn.model.train()
    raw, y = learn.get_preds(tta="flip")
    assert torch.allclose(raw, want, atol=1e-6) and torch.equal(y, targets)
    probs, _, decoded = learn.get_preds(tta="flip", activation="softmax", with_decoded=True)
    assert torch.allclose(probs, torch.softmax(want, -1), atol=1e-6)
    assert torch.equal(decoded, want.argmax(-1))
    assert learn.model.training  # its mode put back
    plain, _ = learn.get_preds()
    assert not torch.allclose(plain, want, atol=1e-4)  # the flip does change the answer


def test_validate_with_flip_scores_the_averaged_outputs():
    learn = _learner()
    want, targets = _by_hand(learn)
    res = learn.validate(tta="flip")
    assert res["valid_loss"] == pytest.approx(F.cross_entropy(want, targets).item(), rel=1e-5)
    assert res["accuracy"] == pytest.approx((want.argmax(-1) == targets).float().mean().item())


def test_one_identity_view_is_no_augmentation():
    learn = _learner()
    assert learn.validate(tta=[identity]) == pytest.approx(learn.validate())
    a, _ = learn.get_preds(tta=[identity])
    b, _ = learn.get_preds()
    assert torch.allclose(a, b, atol=1e-6)


def test_shift_moves_pixels_and_brings_in_zeros():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    right, up = shift(1)(x), shift(0, -1)(x)
    assert torch.equal(right[..., :, 1:], x[..., :, :-1]) and right[..., :, 0].abs().sum() == 0
    assert torch.equal(up[..., :-1, :], x[..., 1:, :]) and up[..., -1, :].abs().sum() == 0
    assert torch.equal(hflip(hflip(x)), x)
    assert views("flip") == (identity, hflip)


@pytest.mark.parametrize("bad", ["mirror", [], [1, 2], 3])
def test_an_unknown_tta_is_refused_naming_the_parameter(bad):
    learn = _learner()
    with pytest.raises(ConfigError, match="tta"):
        learn.validate(tta=bad)
    with pytest.raises(ConfigError, match="tta"):
        learn.get_preds(tta=bad)
