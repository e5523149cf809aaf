"""`ParrnnConfig`: a transformers configuration for language models built from one parrnn layer type."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

import parrnn
from parrnn.cells import cell_names

#: the ``cell`` words of the layers outside the cell registry (`parrnn.cells` names every other one)
STACK_CELLS: tuple[str, ...] = ("sru", "srupp")
NORMS = ("rmsnorm", "layernorm", "none")


def available_cells() -> tuple[str, ...]:
    """The ``cell`` values this parrnn offers: ``"sru"``, ``"srupp"`` and every registered cell (`parrnn.cells`:
    ``"hgrn"``, ``"mingru"``, ``"minlstm"``, ``"qrnn"``, ``"rglru"``, and any cell registered since)."""
    return (*STACK_CELLS, *cell_names())


class ParrnnConfig(PretrainedConfig):
    r"""The configuration of [ParrnnModel][parrnn.hf.ParrnnModel] and
    [ParrnnForCausalLM][parrnn.hf.ParrnnForCausalLM]: token embedding, ``num_layers`` blocks around one
    recurrent layer each, a final norm and a language-model head tied to the embedding.

    One block (``x`` ``(L, N, hidden_size)``, the residual stream):

    ```text
    x = x + dropout(layer(norm(x)))              # the recurrent layer: cell, with cell_options
    x = x + dropout(mlp(norm(x)))                # only when intermediate_size > 0 (SwiGLU)
    ```

    ``norm="none"`` with ``residual=False`` and ``intermediate_size=0`` gives plain stacking (each block is just the
    layer), the layout of ``sru``'s own stacks, whose highway connection plays the residual's role; that is how a
    converted ``sru`` SRU++ stack is loaded (`parrnn.hf.convert.causal_lm_from_srupp`).

    Args:
        vocab_size: tokens of the vocabulary. Default: 256 (bytes, see `parrnn.hf.ByteTokenizer`).
        hidden_size: width of the embedding, of every layer's state and of the residual stream, ``H``.
        num_layers: blocks. Default: 4.
        cell: the recurrent layer, one of ``"sru"``, ``"srupp"``, ``"qrnn"``, ``"mingru"``, ``"minlstm"``,
            ``"hgrn"`` (and ``"rglru"`` where ``parrnn.RGLRU`` exists). Default: ``"mingru"``.
        cell_options: keyword arguments of that layer's constructor (e.g. ``{"version": "v1"}`` for SRU,
            ``{"proj_size": 64, "num_heads": 2}`` for SRU++, ``{"window": 2}`` for QRNN). Unknown names fail
            with a named error when the model is built.
        intermediate_size: width of the SwiGLU MLP after each layer; 0 (default) for none.
        norm: ``"rmsnorm"`` (default), ``"layernorm"`` or ``"none"``, before the layer, the MLP and the head.
        norm_eps: the norms' epsilon. Default: 1e-5.
        residual: add each sub-layer's output to its input. Default: ``True``.
        dropout: dropout on each sub-layer's output (training only). Default: 0.
        initializer_range: std of the normal init of the embedding and the MLP. Default: 0.02.
        backend: the parrnn backend of the recurrent layers (``"auto"``, ``"reference"``, ...). Default:
            ``"auto"``.
        parrnn_version: the parrnn version that made the configuration (set automatically, kept on load).
    """

    model_type = "parrnn"
    keys_to_ignore_at_inference = ["past_key_values"]  # noqa: RUF012 (transformers' class attribute)
    attribute_map = {"num_hidden_layers": "num_layers"}  # noqa: RUF012

    vocab_size: int = 256
    hidden_size: int = 256
    num_layers: int = 4
    cell: str = "mingru"
    cell_options: dict | None = None
    intermediate_size: int = 0
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    residual: bool = True
    dropout: float = 0.0
    initializer_range: float = 0.02
    backend: str = "auto"
    use_cache: bool = True
    tie_word_embeddings: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    parrnn_version: str | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.cell_options = dict(self.cell_options or {})
        if self.parrnn_version is None:
            self.parrnn_version = parrnn.__version__
        if self.cell not in available_cells():
            raise ValueError(f"cell must be one of {available_cells()}, got {self.cell!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        for name in ("vocab_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.intermediate_size, bool) or not isinstance(self.intermediate_size, int) \
                or self.intermediate_size < 0:
            raise ValueError(f"intermediate_size must be an int >= 0 (0: no MLP), got {self.intermediate_size!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        super().__post_init__(**kwargs)

    def architecture_summary(self) -> dict[str, Any]:
        """The fields that decide the parameters' names and shapes (compared when a checkpoint is loaded)."""
        return {"cell": self.cell, "cell_options": self.cell_options, "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "intermediate_size": self.intermediate_size, "norm": self.norm, "tie_word_embeddings":
                self.tie_word_embeddings}
