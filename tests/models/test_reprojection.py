"""FG-CLIP's linear-mlp re-projection and hinge triplet loss against plain transcriptions of
FG-CLIP's ``MLPs.forward`` and ``Contrastive.compute_contrastive_loss``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from matbench.models.reprojection import FGCLIPReProjection, HingeTripletLoss


def fgclip_mlps_scores(state: dict, image: torch.Tensor, text: torch.Tensor, cosine: bool):
    """FG-CLIP ``MLPs`` with ``mlp_dims: []``, ``no_act: True``: one Linear per kept modality
    (``linear_layers.{0,1}.0``), optional L2 normalisation, dot product, sigmoid; pairs
    (image i, text i) as ``model(img_feats, txt_feats)`` scores them in evaluation."""
    out = []
    for i, x in enumerate((image.float(), text.float())):
        key = f"linear_layers.{i}.0"
        if f"{key}.weight" in state:
            x = x @ state[f"{key}.weight"].T + state[f"{key}.bias"]
        out.append(x)
    if cosine:
        out = [x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) for x in out]
    return torch.sigmoid((out[0] * out[1]).sum(1))


def fgclip_state(dim: int, image: bool, text: bool, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, keep in enumerate((image, text)):
        if keep:
            state[f"linear_layers.{i}.0.weight"] = torch.randn(dim, dim, generator=gen) / dim**0.5
            state[f"linear_layers.{i}.0.bias"] = torch.randn(dim, generator=gen) * 0.1
    return state


@pytest.mark.parametrize(("image", "text"), [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("cosine", [True, False])
def test_released_checkpoint_layout_loads_and_scores(
    tmp_path: Path, image: bool, text: bool, cosine: bool
) -> None:
    dim = 16
    state = fgclip_state(dim, image, text)
    path = tmp_path / "fg-ovd_linear-mlp.pt"
    torch.save(state, path)
    model = FGCLIPReProjection(dim, image=image, text=text, cosine=cosine)
    model.load_fgclip(path)
    gen = torch.Generator().manual_seed(1)
    img, txt = torch.randn(5, dim, generator=gen) * 8, torch.randn(5, dim, generator=gen) * 3
    got = model.score(model.project_image(img), model.project_text(txt)).diagonal()
    torch.testing.assert_close(got, fgclip_mlps_scores(state, img, txt, cosine))


def test_checkpoint_keys_and_shapes_checked(tmp_path: Path) -> None:
    path = tmp_path / "te-freezed.pt"
    torch.save(fgclip_state(16, True, False), path)
    with pytest.raises(ValueError, match="reproject_text=False"):
        FGCLIPReProjection(16).load_fgclip(path)
    torch.save(fgclip_state(8, True, True), path)
    with pytest.raises(ValueError, match=r"shape \(8, 8\).*\(16, 16\)"):
        FGCLIPReProjection(16).load_fgclip(path)


class _Pickled:
    pass


def test_checkpoint_read_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"linear_layers.0.0.weight": _Pickled()}, path)
    with pytest.raises(ValueError, match="cannot be read as a torch state dict"):
        FGCLIPReProjection(16).load_fgclip(path)


def test_default_init_is_pytorchs() -> None:
    torch.manual_seed(0)
    model = FGCLIPReProjection(64)
    torch.manual_seed(0)
    reference = nn.Linear(64, 64)
    torch.testing.assert_close(model.image.weight, reference.weight)
    assert model.image.bias is not None and model.text.bias is not None
    assert not torch.allclose(model.image.weight, torch.eye(64))


def fgclip_triplet(scores: list[list[float]], margin: float, fgovd: bool, max_violation: bool):
    """FG-CLIP ``Contrastive.compute_contrastive_loss`` (``ltype='triplet'``), as loops."""
    n, c = len(scores), len(scores[0])
    if fgovd:
        rows = []
        for i in range(n):
            costs = [max(0.0, margin + scores[i][j] - scores[i][0]) for j in range(1, c)]
            rows.append(max(costs) if max_violation else sum(costs))
        return sum(rows)
    cost_s = [[0.0] * n for _ in range(n)]
    cost_im = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                cost_s[i][j] = max(0.0, margin + scores[i][j] - scores[i][i])
                cost_im[i][j] = max(0.0, margin + scores[i][j] - scores[j][j])
    if max_violation:
        return sum(max(r) for r in cost_s) + sum(
            max(cost_im[i][j] for i in range(n)) for j in range(n)
        )
    return sum(map(sum, cost_s)) + sum(map(sum, cost_im))


@pytest.mark.parametrize("max_violation", [False, True])
def test_triplet_losses_match_fgclip(max_violation: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    hard = torch.sigmoid(torch.randn(7, 11, generator=gen))
    loss = HingeTripletLoss("hard_negatives", max_violation=max_violation)
    assert loss.margin == 0.05
    expected = fgclip_triplet(hard.tolist(), 0.05, True, max_violation)
    assert float(loss(hard)) == pytest.approx(expected, rel=1e-5)
    square = torch.sigmoid(torch.randn(6, 6, generator=gen))
    loss = HingeTripletLoss("captions", max_violation=max_violation)
    assert loss.margin == 0.2
    expected = fgclip_triplet(square.tolist(), 0.2, False, max_violation)
    assert float(loss(square)) == pytest.approx(expected, rel=1e-5)


def test_padding_candidates_cost_nothing() -> None:
    scores = torch.tensor([[0.5, 0.6, 0.9], [0.5, 0.4, 0.0]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    loss = HingeTripletLoss("hard_negatives", margin=0.1)
    assert float(loss(scores, valid)) == pytest.approx(0.2 + 0.0 + 0.0)
    assert float(loss(scores)) == pytest.approx(0.2 + 0.5)
    with pytest.raises(ValueError, match="hard_negatives"):
        HingeTripletLoss("infonce")
