"""Block operators and blockwise spectra against exact diagonal blocks of the Hessian."""

import numpy as np
import pytest
import torch

from cases import exact_hessian, tiny_gpt2, tiny_mlp
from hesslab import HessianOperator, blockwise_slq, resolve_blocks
from hesslab.blocks import Block, BlockPart
from hesslab.memory import lanczos_bytes


def flat_indices(model, block):
    """Positions of a block's entries in the full flat parameter vector (model order)."""
    offsets, start = {}, 0
    for n, p in model.named_parameters():
        offsets[n] = (start, p.shape)
        start += p.numel()
    idx = []
    for part in block.parts:
        s, shape = offsets[part.param]
        pos = torch.arange(s, s + int(np.prod(shape))).reshape(shape)
        idx.append((pos if part.index is None else pos[part.index]).reshape(-1))
    return torch.cat(idx)


def assert_same_spectrum(ritz, exact, rtol, label):
    """Every Ritz value is an eigenvalue and every distinct eigenvalue is found."""
    scale = max(np.abs(exact).max(), 1e-12)
    d1 = np.abs(ritz[:, None] - exact[None]).min(axis=1).max() / scale
    d2 = np.abs(exact[:, None] - ritz[None]).min(axis=1).max() / scale
    assert d1 < rtol and d2 < rtol, f"{label}: Ritz/eigenvalue mismatch {d1:.1e}, {d2:.1e}"


@pytest.mark.parametrize("preset", [None, "gpt2-qkv", "gpt2-heads"])
def test_block_operator_equals_dense_diagonal_block(preset):
    case = tiny_gpt2(n_layer=1)
    H = exact_hessian(case)
    op = HessianOperator(case.model, case.loss_fn, case.data)
    for block in resolve_blocks(case.model, preset):
        idx = flat_indices(case.model, block)
        sub = op.restrict(block)
        V = torch.randn(2, sub.dim, dtype=torch.float64)
        err = ((sub @ V) - V @ H[idx][:, idx]).norm() / (V @ H[idx][:, idx]).norm()
        assert err < 1e-10, f"{preset}/{block.name}: rel. error {err:.1e}"


def test_gpt2_presets_split_fused_attention():
    case = tiny_gpt2(n_layer=1, n_embd=8, n_head=2)
    shapes = {n: p.shape for n, p in case.model.named_parameters()}
    blocks = {b.name: b for b in resolve_blocks(case.model, "gpt2-qkv")}
    for qkv in "qkv":
        b = blocks[f"transformer.h.0.attn.{qkv}"]
        assert b.dim(shapes) == 8 * 8 + 8  # weight columns + bias entries
    assert "transformer.h.0.attn.c_attn.weight" not in blocks
    heads = [b for b in resolve_blocks(case.model, "gpt2-heads") if ".attn.q.h" in b.name]
    assert [b.dim(shapes) for b in heads] == [8 * 4 + 4] * 2
    total = sum(b.dim(shapes) for b in blocks.values())
    assert total == sum(p.numel() for p in case.model.parameters()), "presets must cover every entry once"


def test_custom_mapping_with_tensor_slices():
    case = tiny_mlp()
    H = exact_hessian(case)
    spec = {"rows0-2": ("0.weight", (slice(0, 2),)), "mix": ["0.bias", ("2.weight", (slice(None), slice(1, 3)))]}
    op = HessianOperator(case.model, case.loss_fn, case.data)
    for block in resolve_blocks(case.model, spec):
        idx = flat_indices(case.model, block)
        v = torch.randn(len(idx), dtype=torch.float64)
        assert torch.allclose(op.restrict(block) @ v, H[idx][:, idx] @ v, rtol=1e-10, atol=1e-12)


def test_blockwise_slq_with_enough_steps_equals_block_eigenvalues():
    case = tiny_gpt2(n_layer=1)
    H = exact_hessian(case)
    spectra = blockwise_slq(case.model, case.loss_fn, case.data, blocks="gpt2-qkv",
                            num_steps=400, num_probes=2, progress=False)
    for block in resolve_blocks(case.model, "gpt2-qkv"):
        idx = flat_indices(case.model, block)
        exact = torch.linalg.eigvalsh(H[idx][:, idx]).numpy()
        dens = spectra[block.name]
        for row in dens.nodes:
            assert_same_spectrum(row[~np.isnan(row)], exact, 1e-8, block.name)
        assert np.allclose(dens.weights.sum(axis=1), 1.0)


def test_blockwise_slq_shared_graphs_equal_recomputed_graphs():
    case = tiny_mlp()
    kw = dict(num_steps=5, num_probes=3, seed=4, progress=False)
    shared = blockwise_slq(case.model, case.loss_fn, case.data, **kw)
    fresh = blockwise_slq(case.model, case.loss_fn, case.data, graph_memory_budget=0, **kw)
    one_probe = max(lanczos_bytes(p.numel(), 5, 1, torch.float64) for p in case.model.parameters())
    grouped = blockwise_slq(case.model, case.loss_fn, case.data, memory_budget=one_probe, **kw)
    assert {d.info["probe_chunk"] for d in grouped.values()} >= {1}
    for name in shared:
        assert np.allclose(shared[name].nodes, fresh[name].nodes, equal_nan=True, rtol=1e-10)
        assert np.allclose(shared[name].nodes, grouped[name].nodes, equal_nan=True, rtol=1e-10)


@pytest.mark.parametrize("bad, error, text", [
    ({"b": "nope.weight"}, KeyError, "not a parameter"),
    ({"b": ("0.weight", (slice(7, 9),))}, ValueError, "selects no entries"),
    ({"b": [("0.weight", (slice(0, 2),)), ("0.weight", (slice(1, 3),))]}, ValueError, "overlap"),
    ("no-such-preset", ValueError, "unknown block preset"),
])
def test_bad_block_specs_are_refused(bad, error, text):
    with pytest.raises(error, match=text):
        resolve_blocks(tiny_mlp().model, bad)


def test_gpt2_preset_on_other_model_is_refused():
    with pytest.raises(ValueError, match="Hugging Face GPT-2"):
        resolve_blocks(tiny_mlp().model, "gpt2-qkv")


def test_block_objects_can_be_passed_directly():
    model = tiny_mlp().model
    b = Block("w", (BlockPart("0.weight"),))
    assert resolve_blocks(model, [b])[0] == b


def test_zero_padded_block_batching_equals_one_backward_per_block():
    case = tiny_gpt2(n_layer=1)
    blocks = resolve_blocks(case.model, "gpt2-qkv")
    plain = HessianOperator(case.model, case.loss_fn, case.data)
    padded = HessianOperator(case.model, case.loss_fn, case.data, batch_blocks=True)
    requests = [(b, torch.randn(2, plain.block_dim(b), dtype=torch.float64)) for b in blocks]
    for a, b, (block, _) in zip(plain.block_products(requests), padded.block_products(requests), requests):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13), block.name


def test_paper_presets_pick_the_papers_blocks():
    from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification

    from hesslab.blocks import sampled_layers

    assert sampled_layers(12, 4) == [0, 3, 7, 11] and sampled_layers(12, 3) == [0, 6, 11]
    gpt = GPT2LMHeadModel._from_config(GPT2Config(n_layer=12, n_embd=8, n_head=2, vocab_size=5, n_positions=4),
                                       attn_implementation="eager")
    blocks = resolve_blocks(gpt, "gpt2-paper")
    assert len(blocks) == 25, [b.name for b in blocks]
    assert blocks[0].name == "transformer.wte.weight"
    assert [b.name for b in blocks[1:7]] == ["transformer.h.0." + s for s in (
        "attn.q", "attn.k", "attn.v", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")]
    assert {b.name.split(".")[2] for b in blocks[1:]} == {"0", "3", "7", "11"}
    vit = ViTForImageClassification._from_config(
        ViTConfig(hidden_size=8, num_hidden_layers=12, num_attention_heads=2, intermediate_size=16,
                  image_size=8, patch_size=4, num_channels=1, num_labels=3), attn_implementation="eager")
    vblocks = resolve_blocks(vit, "vit-paper")
    assert len(vblocks) == 14, [b.name for b in vblocks]
    qkv = [b for b in vblocks if b.name.endswith(".qkv")]
    assert len(qkv) == 3 and all(len(b.parts) == 3 for b in qkv), "Q, K, V fused as in timm"


def test_paper_loop_order_gives_the_same_block_spectra():
    from hesslab.experiments.hvp_costs import paper_order_agreement

    case = tiny_gpt2(n_layer=1)
    worst = paper_order_agreement(case.model, case.loss_fn, case.data, "gpt2-qkv", num_steps=4)
    assert worst < 1e-10, f"per-block Ritz values differ by {worst:.1e} between loop orders"
