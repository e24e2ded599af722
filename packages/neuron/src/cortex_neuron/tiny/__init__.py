"""The tiny chat model: random weights, a real tokenizer and chat template, a few MB.

Tests, benchmarks and the quickstart load it through the real vLLM engine, so nothing ever
downloads weights. It is built deterministically (fixed seed; the tokenizer is trained on
``corpus.txt``, which ships with this package) and cached by content: building again into a
folder that already holds the same model does nothing.

A Llama with 2 layers, hidden size 256, 4 heads (2 KV heads), a byte-level BPE of 4096 tokens,
tied embeddings, bf16, a context of 8192 tokens: 2.2 M parameters, about 4.6 MB. The ChatML
template renders tools, and the vocabulary holds ``<tool_call>``/``</tool_call>`` so that vLLM's
``hermes`` tool parser works with it. The weights are random: the text it writes is gibberish,
and EOS can come at any time.

Building needs torch, transformers and tokenizers (the neuron's ``[cpu]``/``[vllm]`` extra
brings them); they are imported only when a model is built.
"""

import hashlib
import json
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path

__all__ = ["TINY_MODEL_ID", "build_tiny_model"]

TINY_MODEL_ID = "cortex/tiny-chat"
"""The id the tiny model has in a model dir."""

_RECIPE = 2  # bump when the recipe below changes what is written
_VOCAB = 4096
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
_STAMP = ".cortex-tiny-model"
_CONTEXT = 8192  # long enough that a test can act while a stream runs (seconds on a CPU)

CHAT_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nYou may call these tools:\n"
    "{{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{%- if m['content'] is string %}{{ m['content'] }}"
    "{%- elif m['content'] %}{% for p in m['content'] %}"
    "{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{%- if m['tool_calls'] is defined and m['tool_calls'] %}{% for c in m['tool_calls'] %}"
    "<tool_call>{{ {'name': c['function']['name'], 'arguments': c['function']['arguments']}"
    " | tojson }}</tool_call>{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(
    model_dir: Path, model_id: str = TINY_MODEL_ID, *, seed: int = 0, context: int = _CONTEXT
) -> Path:
    """Write the tiny model to ``model_dir/<model_id>`` unless it is there already.

    Args:
        model_dir: A folder the neuron serves models from (``[harness.vllm] model_dirs``).
        model_id: ``org/name`` (or ``name``); a different id or seed gives another model.
        seed: Seeds the random weights.
        context: Its longest context, in tokens (Claude Code's prompt needs about 28,000).

    Returns:
        The model's folder.
    """
    corpus = files(__package__).joinpath("corpus.txt").read_bytes()
    recipe = json.dumps([_RECIPE, _VOCAB, _SPECIALS, CHAT_TEMPLATE, model_id, seed, context])
    fingerprint = hashlib.sha256(corpus + recipe.encode()).hexdigest()
    target = model_dir / model_id
    stamp = target / _STAMP
    if stamp.is_file() and stamp.read_text() == fingerprint:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        staging = Path(scratch) / "model"
        _write(staging, corpus.decode(), seed, context)
        (staging / _STAMP).write_text(fingerprint)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _write(out: Path, corpus: str, seed: int, context: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB,
        special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus.splitlines(keepends=True), trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.model_max_length = context
    hf_tok.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=(len(hf_tok) + 63) // 64 * 64,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=context,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
