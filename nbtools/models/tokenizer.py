"""A small byte-level BPE tokenizer trained offline, with the Qwen chat special tokens.

Why: no tokenizer can be downloaded here, and the tiny models must tokenize exactly like
a Qwen model does (same special tokens, same chat layout) so that every code path that
depends on them (image-token expansion, masks, templates) is exercised for real.
"""

from __future__ import annotations

import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Order matters only for reproducibility: ids are assigned after the trained vocabulary.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Not "special" for decoding (Qwen keeps them visible so reasoning can be parsed back).
QWEN_PLAIN_ADDED_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>"]

COLOUR_WORDS = [
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white",
    "grey", "gray", "cyan", "magenta", "violet", "teal",
]
SHAPE_WORDS = [
    "circle", "square", "triangle", "star", "hexagon", "rectangle", "ellipse", "diamond",
    "pentagon", "cross", "heart", "oval",
]
_COMMON_WORDS = (
    "the a an is it this that there what which who where when why how of in on at to from with "
    "and or but not no yes colour color shape image picture photo video frame left right top bottom "
    "middle centre center background foreground small large big tiny answer question describe "
    "look see show shows shown think reasoning step first then so because one two three four five "
    "six seven eight nine ten count many few more less same different both each other here please "
    "thank you user assistant system helpful model I we they he she its their my your our be are was "
    "were has have had do does did can could would should will may might must very quite only also "
    "just about around between inside outside above below near far bright dark light plain drawn "
    "filled outline edge corner side pixel pixels label correct wrong true false best better good bad"
).split()


def tokenizer_corpus(seed: int = 0, n_lines: int = 4000) -> list[str]:
    """Synthetic English about coloured shapes plus chat-like lines (deterministic)."""
    rng = random.Random(seed)
    templates = [
        "It is a {c} {s}.",
        "The shape is {c}.",
        "The {s} is {c}.",
        "What colour is the shape? It is {c}.",
        "What shape is in the image? A {s}.",
        "This image shows a {c} {s} on a {b} background.",
        "I see a {c} {s} in the {p} of the picture.",
        "There is one {c} {s} here.",
        "Describe the image. A {c} {s} drawn on {b}.",
        "Let me think step by step. The {s} looks {c}, so the answer is {c}.",
    ]
    places = ["middle", "centre", "top left", "bottom right", "left", "right"]
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.7:
            lines.append(
                rng.choice(templates).format(
                    c=rng.choice(COLOUR_WORDS), s=rng.choice(SHAPE_WORDS),
                    b=rng.choice(COLOUR_WORDS), p=rng.choice(places),
                )
            )
        else:
            words = [rng.choice(_COMMON_WORDS) for _ in range(rng.randint(4, 14))]
            sentence = " ".join(words)
            lines.append(sentence[0].upper() + sentence[1:] + rng.choice([".", "?", "!", ","]))
    # digits and punctuation so numbers/markup tokenize into something other than raw bytes
    lines += [" ".join(str(i) for i in range(k, k + 20)) for k in range(0, 200, 20)]
    lines += ['{"role": "user", "content": [{"type": "image"}, {"type": "text"}]}'] * 5
    return lines


def train_bpe_tokenizer(vocab_size: int = 2048, seed: int = 0, extra_special_tokens: list[str] = ()) -> Tokenizer:
    """Train a byte-level BPE on :func:`tokenizer_corpus` and add the Qwen special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(tokenizer_corpus(seed), trainer=trainer)
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS + list(extra_special_tokens)]
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_PLAIN_ADDED_TOKENS])
    return tok


def build_hf_tokenizer(chat_template: str, vocab_size: int = 2048, seed: int = 0, extra_special_tokens=()):
    """Wrap the trained BPE as a transformers tokenizer with Qwen's pad/eos conventions."""
    from transformers import PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe_tokenizer(vocab_size, seed, list(extra_special_tokens)),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=8192,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = chat_template
    return hf_tok
