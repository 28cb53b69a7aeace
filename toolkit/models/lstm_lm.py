"""The MicroNet 2019 WikiText-103 reference: a one-layer word-level LSTM language model.

The organisers' reference for the ``wikitext103`` track is the LSTM of Rae
et al. 2018 ("Fast Parametric Learning with Activation Memorization",
arXiv 1803.10049), quoted at 159M parameters and 318M math ops per token.
The challenge pages give only those figures; the layer sizes here are an
assumption, the reading of the paper's description that reproduces both:
a tied 512-wide word embedding over WikiText-103's 267,735-word vocabulary,
one LSTM layer of 2048 units, a linear projection 2048 -> 512 applied to
its output (not fed back, unlike ``nn.LSTM(proj_size=...)``, which would
give 146.8M) and a full softmax whose weights are the embedding's::

    ids: [N, T] -> embedding [N, T, E] -> LSTM [N, T, H] -> proj [N, T, E]
      -> logits = proj @ embedding.T + bias [N, T, V]

With the defaults (V = 267,735, E = 512, H = 2048) it has 159,385,047
parameters: embedding V*E = 137,080,320 (shared with the softmax), LSTM
4H*E + 4H*H + 2*4H = 20,987,904, projection H*E + E = 1,049,088, softmax
bias V = 267,735 (a module of its own, so that the tied decoder owns no
parameter and the shared weight is stored once). One token (batch 1,
sequence 1: per token, online) costs 159,100,416 MACs: LSTM 4H(E+H) =
20,971,520, projection H*E = 1,048,576, softmax V*E = 137,080,320 (the
embedding lookup is a gather, free). ``micronet audit
micronet:wikitext103_lstm --track wikitext103 --no-freebie`` counts storage
159,385,047 and 318,239,744 MicroNet ops (159,118,848 multiplies =
MACs + 9H of the gates; 159,116,800 adds = 4H(E+H) + 8H + E*H +
V*E; 2H = 4,096 tanh), so the model scores 2.0032 against the published
159M / 318M (tests/test_wikitext.py). The model returns logits; the
final softmax's exponentials, like any classifier's, are left out.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LSTMLanguageModel", "SoftmaxBias", "wikitext103_lstm", "WIKITEXT103_VOCAB"]

#: Words in WikiText-103's vocabulary (its ``<unk>`` and ``<eos>`` included).
WIKITEXT103_VOCAB = 267_735


class SoftmaxBias(nn.Module):
    """The softmax's bias, ``size`` values added to the logits (its own
    module: the tied decoder then owns no parameter)."""

    def __init__(self, size: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.bias  # [..., V]


class LSTMLanguageModel(nn.Module):
    """Tied embedding, ``num_layers`` LSTM layers, a linear projection back
    to the embedding width, full softmax over the vocabulary (logits out)."""

    def __init__(self, vocab_size: int = WIKITEXT103_VOCAB, embed_dim: int = 512, hidden_size: int = 2048,
                 num_layers: int = 1):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.proj = nn.Linear(hidden_size, embed_dim)
        # tied input and output embeddings; the softmax bias is a parameter of its own, so the
        # decoder owns no parameter and its (shared) weight is stored once, with the embedding
        self.decoder = nn.Linear(embed_dim, vocab_size, bias=False)
        self.decoder.weight = self.embedding.weight
        self.softmax_bias = SoftmaxBias(vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)  # x: [N, T, E]
        x, _ = self.lstm(x)  # x: [N, T, H]
        return self.softmax_bias(self.decoder(self.proj(x)))  # proj: [N, T, E] -> logits [N, T, V]


def wikitext103_lstm(vocab_size: int = WIKITEXT103_VOCAB, embed_dim: int = 512, hidden_size: int = 2048,
                     num_layers: int = 1) -> LSTMLanguageModel:
    """The WikiText-103 reference LSTM LM: ``vocab_size`` words, ``embed_dim``
    wide tied embedding, ``hidden_size`` LSTM units; 159,385,047 parameters
    with the defaults (input: token ids ``[N, T]``, int64)."""
    return LSTMLanguageModel(vocab_size=vocab_size, embed_dim=embed_dim, hidden_size=hidden_size,
                             num_layers=num_layers)
