"""`ParrnnModel` and `ParrnnForCausalLM`: transformers models whose blocks are parrnn recurrent layers.

Layout: the residual stream is time-major ``(L, N, H)`` inside the model (the layers' native layout: no
transposed copies between blocks); inputs and outputs are batch-first as in every transformers model.

Padding: tokens whose ``attention_mask`` is 0 do not touch the state. Each row's valid tokens are moved to the
front (a gather of the token ids, stable, so left padding, right padding or holes all work), the layers run with
``lengths`` (padded steps at the end keep the state and output 0), and the outputs go back to the rows' original
positions (0 at padded positions). A left-padded prompt thus decodes exactly as the same prompt alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import slice_logits_to_keep

from parrnn.hf.cache import ParrnnCache
from parrnn.hf.configuration import ParrnnConfig
from parrnn.hf.mixers import Mixer, State, build_mixer, uses_lower_bounds


class CheckpointMismatchError(ValueError):
    """A checkpoint was made for another architecture (cell, size or layout) than the model loading it."""


@dataclass
class ParrnnModelOutput(ModelOutput):
    """Outputs of `ParrnnModel`.

    Attributes:
        last_hidden_state: ``(N, L, H)`` after the final norm (0 at padded positions).
        past_key_values: the `ParrnnCache` after these tokens (with ``use_cache``).
        hidden_states: with ``output_hidden_states``, the embedding output and every block's output, ``(N, L, H)``.
        cache: the same `ParrnnCache` under the name transformers >= 5.25 carries through ``generate``.
    """

    last_hidden_state: Tensor | None = None
    past_key_values: ParrnnCache | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    cache: ParrnnCache | None = None


@dataclass
class ParrnnCausalLMOutput(ModelOutput):
    """Outputs of `ParrnnForCausalLM`: ``loss`` (with ``labels``), ``logits`` ``(N, L', vocab_size)`` (``L'`` =
    ``logits_to_keep`` or ``L``), ``past_key_values`` and ``hidden_states`` as in `ParrnnModelOutput`."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    past_key_values: ParrnnCache | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    cache: ParrnnCache | None = None


def make_norm(config: ParrnnConfig) -> nn.Module:
    """The configured norm over ``hidden_size`` (``nn.Identity`` for ``norm="none"``)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
    if config.norm == "layernorm":
        return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
    return nn.Identity()


class ParrnnMLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``, ``H -> intermediate_size -> H``, no biases (as Llama's MLP)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ParrnnBlock(GradientCheckpointingLayer):
    """``x + dropout(layer(norm(x)))`` then, with an MLP, ``x + dropout(mlp(norm(x)))`` (see `ParrnnConfig`)."""

    def __init__(self, config: ParrnnConfig, index: int) -> None:
        super().__init__()
        self.residual = bool(config.residual)
        self.dropout = float(config.dropout)
        self.norm = make_norm(config)
        self.mixer: Mixer = build_mixer(config.cell, config.hidden_size, config.cell_options,
                                        backend=config.backend, index=index, num_layers=config.num_layers)
        self.mlp_norm = make_norm(config) if config.intermediate_size else None
        self.mlp = ParrnnMLP(config.hidden_size, config.intermediate_size) if config.intermediate_size else None

    def _add(self, x: Tensor, y: Tensor) -> Tensor:
        if self.dropout and self.training:
            y = F.dropout(y, self.dropout, True)
        return x + y if self.residual else y

    def _mlp(self, x: Tensor) -> Tensor:
        if self.mlp is None:
            return x
        return self._add(x, self.mlp(self.mlp_norm(x)))

    def forward(self, hidden: Tensor, lengths: Tensor | None = None, state: State | None = None,
                want_state: bool = True, floor: Tensor | None = None) -> tuple[Tensor, State | None]:
        """``hidden`` ``(L, N, H)``, ``lengths`` ``(N,)`` or None, the block's state (None: zeros) ->
        ``(hidden, state)``: the parallel forward (fused kernels). ``want_state=False`` returns no state (training:
        nothing holds on to it, and FSDP2 sees one output tensor). ``floor`` ``(H,)``: HGRN's lower bound for
        this block."""
        x = self.norm(hidden)
        y, state = self.mixer(x, state, lengths) if floor is None else self.mixer(x, state, lengths, floor)
        return self._mlp(self._add(hidden, y)), (state if want_state else None)

    def step(self, hidden: Tensor, state: State | None, floor: Tensor | None = None) -> tuple[Tensor, State]:
        """One token: ``hidden`` ``(N, H)`` -> ``(hidden, state)`` through the layer's ``step``."""
        x = self.norm(hidden)
        y, state = self.mixer.step(x, state) if floor is None else self.mixer.step(x, state, floor)
        return self._mlp(self._add(hidden, y)), state


class ParrnnPreTrainedModel(PreTrainedModel):
    """Shared `PreTrainedModel` plumbing: config class, weight init, checkpointing flags, loading checks."""

    config_class = ParrnnConfig
    config: ParrnnConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ParrnnBlock"]  # noqa: RUF012 (transformers' class attribute)
    _is_stateful = True
    _supports_sdpa = True  # nothing to choose: SRU++ attention always runs through SDPA

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate must not build a key/value DynamicCache: the model makes its ParrnnCache on the first forward
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, ParrnnMLP):
            for linear in (module.gate_proj, module.up_proj, module.down_proj):
                init.normal_(linear.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear) and module is getattr(self, "lm_head", None):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)) and module.weight is not None:
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, ParrnnModel) and module.lower_bounds is not None:
            init.zeros_(module.lower_bounds)
        elif isinstance(module, Mixer) and not all(getattr(p, "_is_hf_initialized", False)
                                                   for p in module.parameters()):
            module.reset_parameters()  # the layer's own initialisation, unless every parameter was loaded

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """transformers' ``from_pretrained``, strict: a checkpoint made for another architecture (cell, cell
        options, size or layout) than the configuration it is loaded with raises `CheckpointMismatchError` naming
        both, instead of loading with freshly initialised weights."""
        saved = _saved_config(pretrained_model_name_or_path, kwargs)
        if saved is not None:
            config = kwargs.get("config")
            if not isinstance(config, ParrnnConfig):
                config = ParrnnConfig.from_dict(saved.to_dict() | {k: v for k, v in kwargs.items()
                                                                   if k in saved.architecture_summary()})
            if config.architecture_summary() != saved.architecture_summary():
                raise CheckpointMismatchError(
                    f"the checkpoint {str(pretrained_model_name_or_path)!r} (parrnn {saved.parrnn_version}) does "
                    f"not fit {cls.__name__} with {config.architecture_summary()}: it was made for "
                    f"{saved.architecture_summary()}")
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args,
                                              output_loading_info=True, **kwargs)
        problems = {k: sorted(v) for k, v in info.items()
                    if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if problems:
            raise CheckpointMismatchError(
                f"the checkpoint {str(pretrained_model_name_or_path)!r} does not fit {cls.__name__} with "
                f"{model.config.architecture_summary()}: "
                + "; ".join(f"{k}: {v[:6]}{' ...' if len(v) > 6 else ''}" for k, v in problems.items()))
        return (model, info) if want_info else model


def _saved_config(path: Any, kwargs: dict[str, Any]) -> ParrnnConfig | None:
    """The configuration stored with a checkpoint (None where there is none of ours to read)."""
    try:
        saved = ParrnnConfig.from_pretrained(path, **{k: v for k, v in kwargs.items()
                                                      if k in ("revision", "cache_dir", "local_files_only")})
    except (OSError, ValueError, TypeError):
        return None
    return saved if isinstance(saved, ParrnnConfig) else None


def _compaction(attention_mask: Tensor | None, length: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """From a 0/1 mask ``(N, >= L)`` (its last ``L`` columns are this chunk's): ``(mask (N, L) bool, lengths (N,),
    order (N, L))`` where gathering ``order`` moves each row's valid tokens to the front; Nones when nothing is
    padded, ``order`` None when the padding is already at the end."""
    if attention_mask is None:
        return None, None, None
    if attention_mask.dim() != 2 or attention_mask.size(1) < length:
        raise ValueError(f"attention_mask must be 2-D (N, L) with L >= {length} (the input's length), got shape "
                         f"{tuple(attention_mask.shape)}")
    mask = attention_mask[:, -length:].bool()
    if bool(mask.all()):
        return None, None, None
    lengths = mask.sum(1)
    if bool((lengths == 0).any()):
        raise ValueError("attention_mask has a row without any valid token in this chunk; every row needs one")
    right_padded = torch.arange(length, device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)
    if bool((right_padded == mask).all()):
        return mask, lengths, None
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    return mask, lengths, order


class ParrnnModel(ParrnnPreTrainedModel):
    """Embedding, ``num_layers`` `ParrnnBlock` and a final norm (see `ParrnnConfig`); returns the hidden states."""

    def __init__(self, config: ParrnnConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ParrnnBlock(config, i) for i in range(config.num_layers))
        self.norm = make_norm(config)
        #: HGRN's lower bounds ``(num_layers, H)`` (cell "hgrn"): block k's decay floor is
        #: ``cumsum(softmax(lower_bounds, 0))[k] - softmax(lower_bounds, 0)[0]``, rising with depth
        self.lower_bounds = (nn.Parameter(torch.zeros(config.num_layers, config.hidden_size))
                             if uses_lower_bounds(config.cell, config.cell_options) else None)
        self.post_init()

    def floors(self) -> list[Tensor | None]:
        """Each block's decay floor ``(H,)`` (HGRN), or Nones."""
        if self.lower_bounds is None:
            return [None] * len(self.layers)
        p = torch.softmax(self.lower_bounds, dim=0)
        return list((p.cumsum(0) - p[0]).unbind(0))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None, past_key_values: ParrnnCache | None = None,
                use_cache: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, cache: ParrnnCache | None = None,
                **kwargs: Any) -> ParrnnModelOutput | tuple:
        """``input_ids`` ``(N, L)`` (or ``inputs_embeds`` ``(N, L, H)``), ``attention_mask`` ``(N, L)`` (0 on
        padding; with a cache its last ``L`` columns are read), ``past_key_values`` a `ParrnnCache` to continue
        from (``cache``: the same, under transformers >= 5.25's name). One token with a non-empty cache runs every
        layer's ``step``; otherwise the parallel forward."""
        if past_key_values is None:
            past_key_values = cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids (N, L) or inputs_embeds (N, L, H)")
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if self.training and self.is_activation_checkpointing:  # (the property walks every module)
            use_cache = False
        if past_key_values is not None and not isinstance(past_key_values, ParrnnCache):
            raise TypeError(f"past_key_values must be a ParrnnCache (the model's recurrent state), got "
                            f"{type(past_key_values).__name__}")
        source = input_ids if input_ids is not None else inputs_embeds
        length = source.shape[1]
        cache = past_key_values
        if cache is None and use_cache:
            cache = ParrnnCache(self.config.num_layers)
        states = cache.states if cache is not None else [None] * len(self.layers)
        stepping = length == 1 and cache is not None and cache.seen_tokens > 0 and attention_mask is None

        mask, lengths, order = (None, None, None) if stepping else _compaction(attention_mask, length)
        if order is not None:
            if input_ids is not None:
                input_ids = input_ids.gather(1, order)
            else:
                inputs_embeds = inputs_embeds.gather(1, order.unsqueeze(-1).expand_as(inputs_embeds))
        # time-major from here: (L, N, H)
        hidden = (self.embed_tokens(input_ids.t()) if input_ids is not None else inputs_embeds.transpose(0, 1))
        collected: list[Tensor] = [hidden] if output_hidden_states else []
        new_states: list[State] = []
        for block, state, floor in zip(self.layers, states, self.floors(), strict=True):
            if stepping:
                out, state = block.step(hidden[0], state, floor)
                hidden = out.unsqueeze(0)
            else:
                hidden, state = block(hidden, lengths, state, bool(use_cache), floor)
            new_states.append(state)
            if output_hidden_states:
                collected.append(hidden)
        hidden = self.norm(hidden)
        if output_hidden_states:
            collected[-1] = hidden

        def batch_first(t: Tensor) -> Tensor:
            t = t.transpose(0, 1)
            if order is not None:
                t = torch.empty_like(t).scatter_(1, order.unsqueeze(-1).expand_as(t), t)
            if mask is not None:
                t = t.masked_fill(~mask.unsqueeze(-1), 0)
            return t

        last = batch_first(hidden)
        all_hidden = tuple(batch_first(t) for t in collected) if output_hidden_states else None
        if cache is not None and use_cache:
            for layer, state in zip(cache.layers, new_states, strict=True):
                layer.state = state
            cache.seen_tokens += length
        else:
            cache = None
        if not return_dict:
            return tuple(v for v in (last, cache, all_hidden) if v is not None)
        return ParrnnModelOutput(last_hidden_state=last, past_key_values=cache, hidden_states=all_hidden, cache=cache)


class ParrnnForCausalLM(ParrnnPreTrainedModel, GenerationMixin):
    """`ParrnnModel` with a language-model head (tied to the embedding with ``tie_word_embeddings``).

    `generate` prefills with the parallel forward (fused kernels) and decodes through each layer's ``step``,
    carrying the recurrent state in a `ParrnnCache`; greedy, sampling and beam search (the state is reordered)
    work; a left-padded prompt with its ``attention_mask`` decodes as the prompt alone.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # noqa: RUF012

    def __init__(self, config: ParrnnConfig) -> None:
        super().__init__(config)
        self.model = ParrnnModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def prepare_inputs_for_generation(self, input_ids: Tensor, *args: Any, is_first_iteration: bool | None = False,
                                      **kwargs: Any) -> dict[str, Any]:
        # the cache arrives as past_key_values (transformers 5.23) or cache (5.25 and later): passed on as it came
        inputs = super().prepare_inputs_for_generation(input_ids, *args, is_first_iteration=is_first_iteration,
                                                       **kwargs)
        if inputs.get("use_cache", kwargs.get("use_cache")) and not is_first_iteration:
            inputs["attention_mask"] = None  # the state already holds the prompt; new tokens are never padding
        inputs.pop("position_ids", None)
        return inputs

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None, past_key_values: ParrnnCache | None = None,
                labels: Tensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                logits_to_keep: int | Tensor = 0, cache: ParrnnCache | None = None,
                **kwargs: Any) -> ParrnnCausalLMOutput | tuple:
        """As `ParrnnModel.forward`, plus ``labels`` ``(N, L)`` (shifted inside; -100 ignored) for the mean
        next-token cross-entropy, and ``logits_to_keep`` (0: all positions)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                             past_key_values=past_key_values if past_key_values is not None else cache,
                             use_cache=use_cache,
                             output_hidden_states=output_hidden_states, return_dict=True)
        hidden = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss_kwargs = {k: v for k, v in kwargs.items() if k in ("num_items_in_batch", "ignore_index")}
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size,
                                      **loss_kwargs)
        if not return_dict:
            rest = tuple(v for v in (logits, outputs.past_key_values, outputs.hidden_states) if v is not None)
            return ((loss, *rest) if loss is not None else rest)
        return ParrnnCausalLMOutput(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                                    cache=outputs.past_key_values,
                                    hidden_states=outputs.hidden_states)
