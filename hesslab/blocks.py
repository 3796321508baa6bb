"""Parameter blocks: which entries of the flat parameter vector form one Hessian block.

A :class:`Block` is an ordered list of :class:`BlockPart` (a parameter name and an
optional index into that tensor, e.g. the Q columns of GPT-2's fused ``c_attn``).
Its flat vector is the concatenation of ``param[index].reshape(-1)`` over its parts.
The block's Hessian is the principal sub-matrix H_bb; off-diagonal blocks are ignored.

Blocks are given to :func:`resolve_blocks` as

* ``None``: one block per parameter tensor, named like the parameter;
* a list of parameter names: one block per name;
* a preset name: ``"per-tensor"``, ``"gpt2-qkv"`` (HF GPT-2's ``c_attn`` split into
  Q, K, V; every other tensor its own block), ``"gpt2-heads"`` (Q, K, V further split
  per attention head), ``"gpt2-paper"`` / ``"vit-paper"`` (the blocks the paper's
  code samples: 25 for GPT-2, 14 for ViT-base; layers sampled evenly for other depths);
* a mapping ``{block_name: parts}``, where ``parts`` is a parameter name, a
  ``(name, index)`` pair, or a list of those; ``index`` is a slice tuple applied to
  the tensor (e.g. ``(slice(None), slice(0, 64))``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from math import prod

import torch
from torch import Tensor, nn

Index = tuple[slice, ...]


@dataclass(frozen=True)
class BlockPart:
    """One piece of a block: ``param[index]`` (the whole tensor when ``index`` is None)."""

    param: str
    index: Index | None = None

    def shape(self, param_shape: torch.Size) -> torch.Size:
        """Shape of the selected entries, for a parameter of ``param_shape``."""
        if self.index is None:
            return param_shape
        return torch.empty(param_shape, device="meta")[self.index].shape


@dataclass(frozen=True)
class Block:
    """A named set of parameter entries whose Hessian sub-matrix H_bb is studied."""

    name: str
    parts: tuple[BlockPart, ...]

    @property
    def params(self) -> tuple[str, ...]:
        """Names of the parameters this block touches, in first-appearance order."""
        return tuple(dict.fromkeys(part.param for part in self.parts))

    def dim(self, shapes: Mapping[str, torch.Size]) -> int:
        """Number of entries of the block given the parameters' shapes."""
        return sum(prod(part.shape(shapes[part.param])) for part in self.parts)


def _as_index(index) -> Index:
    if isinstance(index, slice):
        return (index,)
    if isinstance(index, tuple) and all(isinstance(s, slice) for s in index):
        return index
    raise TypeError(
        f"a block part's index must be a slice or a tuple of slices, got {index!r}"
    )


def _parse_parts(name: str, spec) -> tuple[BlockPart, ...]:
    if isinstance(spec, str):
        return (BlockPart(spec),)
    if isinstance(spec, BlockPart):
        return (spec,)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return (BlockPart(spec[0], _as_index(spec[1])),)
    if isinstance(spec, Iterable):
        return tuple(part for item in spec for part in _parse_parts(name, item))
    raise TypeError(
        f"block {name!r}: expected a parameter name, a (name, slices) pair or a list "
        f"of those, got {spec!r}"
    )


def per_tensor_blocks(names: Iterable[str]) -> list[Block]:
    """One block per parameter tensor, named like the parameter."""
    return [Block(n, (BlockPart(n),)) for n in names]


def gpt2_blocks(
    model: nn.Module, names: Sequence[str], *, heads: bool = False
) -> list[Block]:
    """Blocks for a Hugging Face GPT-2: ``c_attn`` split into Q, K, V (and heads).

    HF GPT-2 stores Q, K and V fused in ``attn.c_attn`` as a ``Conv1D`` whose weight
    is ``[d, 3d]`` (input-major): Q, K, V are the column ranges ``[0:d]``, ``[d:2d]``,
    ``[2d:3d]``; the bias ``[3d]`` splits the same way and goes with its weight.

    Args:
        model: a ``GPT2Model``/``GPT2LMHeadModel`` (anything with ``config.n_embd``).
        names: the parameter names to partition (model order).
        heads: also split each of Q, K, V into ``config.n_head`` column groups.

    Returns:
        Blocks named ``<prefix>.attn.q`` (or ``.q.h3`` with heads) for the fused
        attention and one block per remaining tensor.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "n_embd"):
        raise ValueError(
            "the 'gpt2-qkv' / 'gpt2-heads' presets need a Hugging Face GPT-2 model "
            "(config.n_embd); use blocks=None for one block per tensor"
        )
    d, n_head = config.n_embd, config.n_head
    blocks: list[Block] = []
    done: set[str] = set()
    for name in names:
        if name in done:
            continue
        if not name.endswith("attn.c_attn.weight"):
            if not name.endswith("attn.c_attn.bias"):
                blocks.append(Block(name, (BlockPart(name),)))
                done.add(name)
            continue
        prefix = name[: -len(".c_attn.weight")]
        bias = prefix + ".c_attn.bias"
        has_bias = bias in names
        done.update({name, bias})
        for i, qkv in enumerate("qkv"):
            groups = range(n_head) if heads else [None]
            for h in groups:
                width = d // n_head if heads else d
                start = i * d + (h * width if heads else 0)
                cols = slice(start, start + width)
                parts = [BlockPart(name, (slice(None), cols))]
                if has_bias:
                    parts.append(BlockPart(bias, (cols,)))
                suffix = f".{qkv}" + (f".h{h}" if heads else "")
                blocks.append(Block(prefix + suffix, tuple(parts)))
    # bias parameters whose weight was not selected stay their own block
    for name in names:
        if name not in done:
            blocks.append(Block(name, (BlockPart(name),)))
    return blocks


def sampled_layers(num_layers: int, count: int) -> list[int]:
    """Evenly spaced layer indices; the paper's choices for 12 layers (0, 3, 7, 11 and 0, 6, 11)."""
    paper = {(12, 4): [0, 3, 7, 11], (12, 3): [0, 6, 11]}
    if (num_layers, count) in paper:
        return paper[(num_layers, count)]
    return sorted({round(i * (num_layers - 1) / max(count - 1, 1)) for i in range(count)})


_LAYER = re.compile(r"\.(?:h|layer|layers)\.(\d+)\.")


def _layer_of(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def gpt2_paper_blocks(model: nn.Module, names: Sequence[str]) -> list[Block]:
    """The paper's 25 GPT-2 blocks (``config/train_gpt2_small.py`` of its code).

    ``wte`` and, in 4 sampled layers, Q, K, V, the attention output, ``mlp.c_fc``
    and ``mlp.c_proj`` (weights only: the paper's GPT-2 has no biases). With 12
    layers the layers are 0, 3, 7 and 11.
    """
    d = model.config.n_embd
    layers = sampled_layers(model.config.n_layer, 4)
    blocks = [Block(n, (BlockPart(n),)) for n in names if n.endswith("wte.weight")]
    for i in layers:
        prefix = next((n[: -len(".attn.c_attn.weight")] for n in names
                       if n.endswith(".attn.c_attn.weight") and _layer_of(n) == i), None)
        if prefix is None:
            continue
        w = prefix + ".attn.c_attn.weight"
        for j, qkv in enumerate("qkv"):
            blocks.append(Block(f"{prefix}.attn.{qkv}", (BlockPart(w, (slice(None), slice(j * d, (j + 1) * d))),)))
        for suffix in (".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"):
            if prefix + suffix in names:
                blocks.append(Block(prefix + suffix, (BlockPart(prefix + suffix),)))
    return blocks


def vit_paper_blocks(model: nn.Module, names: Sequence[str]) -> list[Block]:
    """The paper's 14 ViT-base blocks (``vision_models/main.py`` of its code).

    The patch embedding; in 3 sampled layers the fused Q/K/V weights (one block,
    as timm's ``attn.qkv``), the attention output, ``fc1`` and ``fc2``; and the
    classifier head (weights only).
    """
    config = model.config
    layers = sampled_layers(config.num_hidden_layers, 3)
    weights = [n for n in names if n.endswith("weight") and "norm" not in n]
    blocks = [Block(n, (BlockPart(n),)) for n in weights if "patch_embeddings" in n]
    for i in layers:
        mine = [n for n in weights if _layer_of(n) == i]
        qkv = [n for n in mine if re.search(r"(q_proj|k_proj|v_proj|query|key|value)\.weight$", n)]
        if qkv:
            blocks.append(Block(qkv[0].rsplit(".", 2)[0] + ".qkv", tuple(BlockPart(n) for n in qkv)))
        for pattern in (r"(o_proj|attention\.output\.dense)\.weight$", r"(fc1|intermediate\.dense)\.weight$",
                        r"(fc2|\d+\.output\.dense)\.weight$"):
            blocks += [Block(n, (BlockPart(n),)) for n in mine if re.search(pattern, n)]
    blocks += [Block(n, (BlockPart(n),)) for n in weights if n.startswith("classifier")]
    return blocks


PRESETS = ("per-tensor", "gpt2-qkv", "gpt2-heads", "gpt2-paper", "vit-paper")


def resolve_blocks(
    model: nn.Module,
    blocks=None,
    params: Sequence[str] | None = None,
) -> list[Block]:
    """Turn a block specification into validated :class:`Block` objects.

    Args:
        model: the model whose ``named_parameters()`` the blocks refer to.
        blocks: ``None``, a preset name, a list of parameter names, or a mapping
            (see the module docstring).
        params: the parameter names the blocks may use (default: all parameters
            that require grad).

    Returns:
        The blocks, each checked to refer to existing parameters with in-range,
        non-empty and non-overlapping indices.
    """
    shapes = {n: p.shape for n, p in model.named_parameters()}
    if params is None:
        params = [n for n, p in model.named_parameters() if p.requires_grad]
    if blocks is None or blocks == "per-tensor":
        result = per_tensor_blocks(params)
    elif isinstance(blocks, str):
        if blocks not in PRESETS:
            raise ValueError(f"unknown block preset {blocks!r}; choose one of {PRESETS}")
        if blocks == "vit-paper":
            result = vit_paper_blocks(model, params)
        elif blocks == "gpt2-paper":
            gpt2_blocks(model, [])  # validates that this is a HF GPT-2
            result = gpt2_paper_blocks(model, params)
        else:
            result = gpt2_blocks(model, params, heads=blocks == "gpt2-heads")
    elif isinstance(blocks, Mapping):
        result = [Block(str(k), _parse_parts(str(k), v)) for k, v in blocks.items()]
    elif isinstance(blocks, Iterable):
        result = [Block(b.name, b.parts) if isinstance(b, Block) else Block(b, (BlockPart(b),))
                  for b in blocks]
    else:
        raise TypeError(f"blocks must be None, a preset name, a list or a mapping, got {blocks!r}")
    _validate(result, shapes, set(params))
    return result


def _validate(blocks: list[Block], shapes: Mapping[str, torch.Size], allowed: set[str]) -> None:
    if not blocks:
        raise ValueError("no blocks: the model has no parameters that require grad")
    seen_names = set()
    for block in blocks:
        if block.name in seen_names:
            raise ValueError(f"duplicate block name {block.name!r}")
        seen_names.add(block.name)
        if not block.parts:
            raise ValueError(f"block {block.name!r} is empty")
        for part in block.parts:
            if part.param not in shapes:
                raise KeyError(
                    f"block {block.name!r} refers to {part.param!r}, which is not a "
                    f"parameter of the model; see model.named_parameters()"
                )
            if part.param not in allowed:
                raise ValueError(
                    f"block {block.name!r} refers to {part.param!r}, which is not among "
                    f"the operator's parameters (does it require grad?)"
                )
            try:
                sel = part.shape(shapes[part.param])
            except IndexError as err:
                raise IndexError(
                    f"block {block.name!r}: index {part.index} out of range for "
                    f"{part.param!r} of shape {tuple(shapes[part.param])}"
                ) from err
            if prod(sel) == 0:
                raise ValueError(f"block {block.name!r}: part {part} selects no entries")
        # overlapping parts inside one block would count entries twice
        for name in block.params:
            mask = torch.zeros(shapes[name], dtype=torch.int8)
            for part in block.parts:
                if part.param == name:
                    mask[part.index if part.index is not None else ...] += 1
            if int(mask.max()) > 1:
                raise ValueError(f"block {block.name!r}: parts of {name!r} overlap")


def select_parameters(model: nn.Module, params) -> tuple[list[str], list[Tensor]]:
    """Names and tensors of the parameters to differentiate, in ``model.named_parameters()`` order.

    Args:
        model: the network.
        params: tensors or names; None for every parameter that requires grad.
    """
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    else:
        params = list(params)
        by_id = {id(p): n for n, p in named}
        by_name = dict(named)
        wanted: set[str] = set()
        for p in params:
            if isinstance(p, str):
                if p not in by_name:
                    raise KeyError(
                        f"{p!r} is not a parameter of the model; names come from "
                        "model.named_parameters()"
                    )
                wanted.add(p)
            elif isinstance(p, Tensor):
                if id(p) not in by_id:
                    raise ValueError(
                        f"a tensor of shape {tuple(p.shape)} in params is not a parameter "
                        "of the model (pass model parameters themselves, or their names)"
                    )
                wanted.add(by_id[id(p)])
            else:
                raise TypeError(f"params must hold tensors or names, got {type(p).__name__}")
        chosen = [(n, p) for n, p in named if n in wanted]  # model order defines the flat vector
        frozen = [n for n, p in chosen if not p.requires_grad]
        if frozen:
            raise ValueError(f"parameters {frozen} do not require grad; call p.requires_grad_()")
    if not chosen:
        raise ValueError("no parameters to differentiate: none require grad")
    return [n for n, _ in chosen], [p for _, p in chosen]
