"""A word-level tokenizer for the embedded world, saved and loaded as an ordinary HF fast tokenizer.

Every made-up name is one token, so a fact is one (subject token, relation words, object token) pattern. Words
carry their leading space (GPT-2 style) and a space is put at the start of the text and of every line before
splitting, so " Tarsk" is the same token at the start of a line, after "A:", or mid-sentence; the decoder takes
those spaces out again, so ``decode(encode(text)) == text`` for text whose lines do not start with a space.
Newline is its own token: generation stops there.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<unk>", "<eos>"]
TOKEN_PATTERN = r"\n| ?[^\s\w]| ?\w+| +"


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated")


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.Prepend(" "), normalizers.Replace(Regex(r"\n(?=[^\n ])"), "\n ")])


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Vocabulary = every piece that occurs in ``texts``, in order of first appearance (deterministic)."""
    normalizer, pre = _normalizer(), _pre_tokenizer()
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIALS)}
    for text in texts:
        normalized = normalizer.normalize_str(text)
        for piece, _ in pre.pre_tokenize_str(normalized):
            if piece not in vocab:
                vocab[piece] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizer
    core.pre_tokenizer = pre
    core.decoder = decoders.Sequence([decoders.Fuse(), decoders.Replace("\n ", "\n"), decoders.Strip(" ", 1, 0)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>", bos_token="<eos>",
        clean_up_tokenization_spaces=False, padding_side="left",
    )
    return tokenizer
