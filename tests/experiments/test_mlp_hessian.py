"""hesslab.experiments.mlp_hessian: the digits MLP's Hessian, partitions and block mass."""

import numpy as np
import pytest
import torch

from hesslab.experiments.mlp_hessian import block_mass, digits_mlp, explicit_hessians, layer_partition


def test_partition_by_layer_and_by_tensor():
    model = digits_mlp(8)
    assert layer_partition(model) == [("0", 0, 520), ("2", 520, 610)]
    assert [p[1:] for p in layer_partition(model, "tensor")] == [(0, 512), (512, 520), (520, 600), (600, 610)]
    neurons = layer_partition(model, "neuron")
    assert len(neurons) == 8 + 1 + 10 + 1 and neurons[1] == ("0.weight[1]", 64, 128)
    assert neurons[8] == ("0.bias", 512, 520) and neurons[9] == ("2.weight[0]", 520, 528)
    assert neurons[-1] == ("2.bias", 600, 610)
    with pytest.raises(ValueError, match="layer"):
        layer_partition(model, "unit")


def test_block_mass_on_known_matrices():
    partition = [("a", 0, 2), ("b", 2, 4)]
    block_diagonal = np.kron(np.eye(2), np.ones((2, 2)))
    assert block_mass(block_diagonal, partition) == {"diagonal_share": 1.0, "per_entry_ratio": np.inf}
    ones = np.ones((4, 4))
    assert block_mass(ones, partition) == pytest.approx({"diagonal_share": 0.5, "per_entry_ratio": 1.0})
    scaled = ones + block_diagonal  # 4 inside, 1 outside per squared entry
    assert block_mass(scaled, partition)["per_entry_ratio"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="covers"):
        block_mass(ones, [("a", 0, 3)])


def test_explicit_hessian_is_the_autograd_hessian_at_each_stage(tmp_path):
    result = explicit_hessians(steps=20, stages=(0.0, 1.0), cache=tmp_path, progress=False)
    images_model = digits_mlp(8)
    torch.manual_seed(0)
    fresh = digits_mlp(8)
    h0 = result.hessians[0.0]
    assert h0.shape == (610, 610) and np.isfinite(h0).all()
    assert max(result.asymmetry.values()) < 1e-12
    # stage 0 is the freshly initialised model: recompute its Hessian independently
    from hesslab.experiments.data import digits
    from torch.func import functional_call

    x, y = digits()
    x = x.flatten(1).double()
    names = [n for n, _ in fresh.named_parameters()]
    shapes = [p.shape for _, p in fresh.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in fresh.parameters()])

    def loss(v):
        params = dict(zip(names, (c.reshape(s) for c, s in zip(v.split([s.numel() for s in shapes]), shapes))))
        return torch.nn.functional.cross_entropy(functional_call(images_model, params, (x,)), y)

    expected = torch.autograd.functional.hessian(loss, flat).numpy()
    np.testing.assert_allclose(h0, expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(result.hessians[1.0], h0)


def test_figure2_sentences_follow_the_ratios():
    from hesslab.experiments.mlp_hessian import figure2_sentences

    def stages(*ratios):
        return {s: {"per_entry_ratio": r, "diagonal_share": 0.5} for s, r in zip((0.01, 0.5, 1.0), ratios)}

    good = figure2_sentences({"layer": stages(5, 6, 7), "tensor": stages(2, 2, 3), "neuron": stages(50, 60, 70)})
    assert "near block-diagonal at every stage" in good["layer"] and "strongly coupled" in good["tensor"]
    late = figure2_sentences({"layer": stages(1.5, 4, 5), "tensor": stages(6, 7, 8), "neuron": stages(2, 9, 9)})
    assert "by the end (5.0×) but not at every stage" in late["layer"]
    assert "do not pass" in late["neuron"] and "strongly coupled" not in late["tensor"]
    never = figure2_sentences({"layer": stages(1.0, 1.2, 1.1), "tensor": stages(1, 1, 1), "neuron": stages(1, 1, 1)})
    assert "**not** near block-diagonal" in never["layer"]
