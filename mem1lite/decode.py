"""A plain-torch decoding step for Qwen2 models on the CPU: the `kv` engine's inner loop.

    step = PlainStep.of(model)                   # None: not a plain Qwen2, or not on the CPU
    logits = step(tokens, positions, cache, mask)   # one new token per row, (B, V)

Why: a decoding step of the 1.7 M-parameter model is ~3.4 MFLOP per token, so on a CPU its time
goes to what surrounds the arithmetic. transformers' forward builds a 4D mask from the 2D one at
every step, copies the grouped keys/values to every query head (`repeat_kv`: the whole cache, every
layer, every step), runs three projections where one would do, and goes through module hooks and
output records. This step computes the same function with the same weights:

1. Weights are read from the live modules at each `of()` (a rollout's start): q, k and v stacked
   into one matrix, gate and up into another, so a layer is four matrix products. The RMS norms
   are the model's own modules, so whatever they do (transformers' float32 island, or none in
   masks.without_float32_islands) happens here too. A peft LoRA
   layer contributes its base weight plus its active adapters' delta (`get_delta_weight`), nothing
   when its adapters are disabled: PPO's rollouts and `disable_adapter()` comparisons see the
   policy they would see through transformers.
2. Rotary embeddings as transformers computes them (`position * inv_freq` in float32, then cos and
   sin of the doubled frequencies), for the step's positions only.
3. Attention with the G query heads that share a key/value head passed to PyTorch's attention as
   G queries of that one head: (B, KV, G, D) against the cache as it is, (B, KV, L, D), no copy and
   no per-step 4D mask beyond (B, 1, 1, L). 2.1 ms against 3.8 ms for `enable_gqa` and 26 ms with
   the keys/values repeated, at 64 rows x 600 columns on one thread.
4. The keys and values go into the `kv` engine's preallocated cache (`generate._kv_layer_class`)
   at its next column, so the prefill (transformers': compute-bound, a plain version measured no
   faster), row dropping and the cross-turn store are unchanged.

Only the default rotary type, no sliding window, float32 or float64 weights, LoRA weights of the
same dtype (peft runs float32 adapters on a float64 base in float32, which a merged weight would
not reproduce), on the CPU; anything else (a GPU, bfloat16, another architecture) keeps
transformers' forward. The logits agree with
transformers' to float rounding (tests/test_decode.py: float64 within 1e-12, and the `kv` engine
writes the same tokens either way on a trained checkpoint); `mem1 bench generate` measures both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def _bias(linear) -> torch.Tensor | None:
    """A linear map's bias (a peft LoRA layer's is its base layer's), without computing any delta."""
    return getattr(linear, "base_layer", linear).bias


def _weight(linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[1] A linear map's effective (weight, bias): a peft LoRA layer's base plus its active deltas."""
    base = getattr(linear, "base_layer", None)
    bias = _bias(linear)
    bias = None if bias is None else bias.detach()
    if base is None:
        return linear.weight.detach(), bias
    weight = base.weight.detach()
    if not getattr(linear, "disable_adapters", False) and not getattr(linear, "merged", False):
        for name in linear.active_adapters:
            if name in getattr(linear, "lora_A", {}):
                weight = weight + linear.get_delta_weight(name).detach().to(weight.dtype)
    return weight, bias


def _stack(linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    pairs = [_weight(m) for m in linears]
    weight = torch.cat([w for w, _ in pairs])
    if all(b is None for _, b in pairs):
        return weight, None
    return weight, torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in pairs])


@dataclass
class _Layer:
    norm_in: torch.nn.Module
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    out: torch.Tensor
    norm_post: torch.nn.Module
    gate_up: torch.Tensor
    down: torch.Tensor


def _backbone(model):
    """(the Qwen2Model, the LM head) when `model` is a Qwen2ForCausalLM or peft's wrapper of one,
    else (None, None): a module wrapping the model in other ways (one that edits its logits, say)
    must keep its own forward."""
    inner = model.get_base_model() if type(model).__module__.startswith("peft.") else model
    if type(inner).__name__ == "Qwen2ForCausalLM":
        return inner.model, inner.lm_head
    return None, None


class PlainStep:
    """One decoding step of a Qwen2 model in plain torch (see the module docstring)."""

    def __init__(self, backbone, head):
        config = backbone.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.embed = backbone.embed_tokens.weight.detach()
        self.inv_freq = backbone.rotary_emb.inv_freq.detach().float()
        self.scaling = float(backbone.rotary_emb.attention_scaling)
        self.norm = backbone.norm
        self.head, _ = _weight(head)
        self.layers = []
        for layer in backbone.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv, qkv_bias = _stack([attn.q_proj, attn.k_proj, attn.v_proj])
            self.layers.append(
                _Layer(
                    layer.input_layernorm,
                    qkv,
                    qkv_bias,
                    _weight(attn.o_proj)[0],
                    layer.post_attention_layernorm,
                    _stack([mlp.gate_proj, mlp.up_proj])[0],
                    _weight(mlp.down_proj)[0],
                )
            )

    @classmethod
    def of(cls, model) -> PlainStep | None:
        """The step for `model`, or None where transformers' forward must stay (module docstring)."""
        backbone, head = _backbone(model)
        if backbone is None:
            return None
        config = backbone.config
        weight = backbone.embed_tokens.weight
        rope = getattr(backbone.rotary_emb, "rope_type", "default")
        plain = (
            weight.device.type == "cpu"
            and weight.dtype in SUPPORTED_DTYPES
            and rope == "default"
            and not getattr(config, "use_sliding_window", False)
            and all(p.dtype == weight.dtype for n, p in backbone.named_parameters() if "lora_" in n)
            # the step has no bias for these (Qwen2 has none); read without computing LoRA deltas
            and all(
                _bias(m) is None
                for b in backbone.layers
                for m in (b.self_attn.o_proj, b.mlp.gate_proj, b.mlp.up_proj, b.mlp.down_proj)
            )
        )
        return cls(backbone, head) if plain else None

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    @torch.no_grad()
    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache, mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, V) of one new token per row. tokens, positions: (B,); `cache`: the engine's
        preallocated cache, whose layers take the new keys/values at their next column; `mask`:
        (B, L + 1) with 1 where a column may be attended (the new token's column included)."""
        B, H, KV, D = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        G = H // KV
        x = self.embed[tokens]  # (B, hidden)
        freqs = positions[:, None].float() * self.inv_freq  # [2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.scaling).to(x.dtype)[:, None, :]  # (B, 1, D)
        sin = (emb.sin() * self.scaling).to(x.dtype)[:, None, :]
        visible = (mask != 0)[:, None, None, :]  # (B, 1, 1, L + 1)
        for layer, kv in zip(self.layers, cache.layers):
            h = layer.norm_in(x)
            qkv = F.linear(h, layer.qkv, layer.qkv_bias)  # [1] one product for q, k and v
            q = self._rotate(qkv[:, : H * D].view(B, H, D), cos, sin)
            k = self._rotate(qkv[:, H * D : (H + KV) * D].view(B, KV, D), cos, sin)
            v = qkv[:, (H + KV) * D :].view(B, KV, D)
            keys, values = kv.update(k[:, :, None, :], v[:, :, None, :])  # [4] (B, KV, L + 1, D)
            # [3] a key/value head's G query heads as G queries of that one head: no copy of the cache
            attended = F.scaled_dot_product_attention(q.view(B, KV, G, D), keys, values, attn_mask=visible)
            x = x + F.linear(attended.reshape(B, H * D), layer.out)
            h = layer.norm_post(x)
            gate, up = F.linear(h, layer.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        return F.linear(self.norm(x), self.head)
