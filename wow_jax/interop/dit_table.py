"""PyTorch <-> Flax names of the Wan2.1 DiT, for Wan2.1-native and diffusers checkpoints.

naming='wan':       Wan2.1 `WanModel` state dict (the published Wan2.1 / WoW-1-Wan-14B format):
                    patch_embedding, text_embedding.0/.2, time_embedding.0/.2, time_projection.1,
                    blocks.N.{self_attn,cross_attn}.{q,k,v,o,norm_q,norm_k}, cross_attn.{k_img,
                    v_img,norm_k_img}, blocks.N.norm3 (cross-attention norm), blocks.N.ffn.0/.2,
                    blocks.N.modulation, head.head, head.modulation, img_emb.proj.0/1/3/4.
naming='diffusers': diffusers `WanTransformer3DModel` state dict (condition_embedder.*,
                    blocks.N.attn1/attn2.to_q/..., blocks.N.norm2 (cross-attention norm),
                    blocks.N.ffn.net.0.proj/net.2, scale_shift_table, proj_out).

Both namings hold the same tensors in the same layouts (modulation tables [1, 6, dim]); the Flax
tree stacks the blocks along a leading 'layers' axis when `scan_layers` (Rule.layer = N), else has
one subtree `blocks_N` per block.
"""

import ml_collections

from wow_jax.interop.mapping import Rule, Transform

NAMINGS = ("wan", "diffusers")
LINEAR, IDENTITY, CONV = Transform.LINEAR, Transform.IDENTITY, Transform.CONV

# (wan module, diffusers module, flax path) of the linear layers outside the blocks.
_TOP_LINEARS = (
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1", ("text_embedding", "fc1")),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2", ("text_embedding", "fc2")),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1", ("time_embedding", "fc1")),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2", ("time_embedding", "fc2")),
    ("time_projection.1", "condition_embedder.time_proj", ("time_projection",)),
    ("head.head", "proj_out", ("head", "head")),
)
_IMAGE_LINEARS = (
    (
        "img_emb.proj.1",
        "condition_embedder.image_embedder.ff.net.0.proj",
        ("img_emb", "mlp", "fc1"),
    ),
    ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2", ("img_emb", "mlp", "fc2")),
)
_IMAGE_NORMS = (
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1", ("img_emb", "norm_in")),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2", ("img_emb", "norm_out")),
)
# (wan, diffusers, flax sub-path) inside block N.
_ATTN_LINEARS = (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"))
_QK_NORMS = (("norm_q", "norm_q"), ("norm_k", "norm_k"))
_IMAGE_ATTN_LINEARS = (("k_img", "add_k_proj"), ("v_img", "add_v_proj"))
_FFN_LINEARS = (("ffn.0", "ffn.net.0.proj", ("ffn", "fc1")), ("ffn.2", "ffn.net.2", ("ffn", "fc2")))


def _linear(torch_module: str, flax_path: tuple, layer=None) -> list[Rule]:
    return [
        Rule(f"{torch_module}.weight", (*flax_path, "kernel"), LINEAR, layer),
        Rule(f"{torch_module}.bias", (*flax_path, "bias"), IDENTITY, layer),
    ]


def _layer_norm(torch_module: str, flax_path: tuple, layer=None) -> list[Rule]:
    return [
        Rule(f"{torch_module}.weight", (*flax_path, "scale"), IDENTITY, layer),
        Rule(f"{torch_module}.bias", (*flax_path, "bias"), IDENTITY, layer),
    ]


def _rms_norm(torch_module: str, flax_path: tuple, layer=None) -> list[Rule]:
    return [Rule(f"{torch_module}.weight", (*flax_path, "scale"), IDENTITY, layer)]


def _block_rules(dit_cfg, i: int, wan: bool) -> list[Rule]:
    """Rules of block i; flax paths are relative to the block's subtree root."""
    if dit_cfg.scan_layers:
        root, layer = ("blocks",), i
    else:
        root, layer = (f"blocks_{i}",), None
    prefix = f"blocks.{i}."
    out = []
    for attn_wan, attn_diff in (("self_attn", "attn1"), ("cross_attn", "attn2")):
        attn = prefix + (attn_wan if wan else attn_diff)
        path = (*root, attn_wan)
        for w, d in _ATTN_LINEARS:
            out += _linear(f"{attn}.{w if wan else d}", (*path, w), layer)
        if dit_cfg.qk_norm:
            for w, d in _QK_NORMS:
                out += _rms_norm(f"{attn}.{w if wan else d}", (*path, w), layer)
        if attn_wan == "cross_attn" and dit_cfg.variant == "i2v":
            for w, d in _IMAGE_ATTN_LINEARS:
                out += _linear(f"{attn}.{w if wan else d}", (*path, w), layer)
            if dit_cfg.qk_norm:
                name = "norm_k_img" if wan else "norm_added_k"
                out += _rms_norm(f"{attn}.{name}", (*path, "norm_k_img"), layer)
    if dit_cfg.cross_attn_norm:
        out += _layer_norm(
            prefix + ("norm3" if wan else "norm2"), (*root, "cross_attn_norm"), layer
        )
    for w, d, path in _FFN_LINEARS:
        out += _linear(prefix + (w if wan else d), (*root, *path), layer)
    table = prefix + ("modulation" if wan else "scale_shift_table")
    out.append(Rule(table, (*root, "modulation"), IDENTITY, layer))
    return out


def rules(dit_cfg: ml_collections.ConfigDict, naming: str) -> list[Rule]:
    """One Rule per PyTorch tensor of the DiT described by `config.model.dit`."""
    if naming not in NAMINGS:
        raise ValueError(f"DiT checkpoint naming must be one of {list(NAMINGS)}, got {naming!r}")
    wan = naming == "wan"
    out = [
        Rule("patch_embedding.weight", ("patch_embedding", "kernel"), CONV),
        Rule("patch_embedding.bias", ("patch_embedding", "bias"), IDENTITY),
    ]
    for w, d, path in _TOP_LINEARS:
        out += _linear(w if wan else d, path)
    out.append(
        Rule("head.modulation" if wan else "scale_shift_table", ("head", "modulation"), IDENTITY)
    )
    if dit_cfg.variant == "i2v":
        for w, d, path in _IMAGE_LINEARS:
            out += _linear(w if wan else d, path)
        for w, d, path in _IMAGE_NORMS:
            out += _layer_norm(w if wan else d, path)
    for i in range(dit_cfg.num_layers):
        out += _block_rules(dit_cfg, i, wan)
    return out


def diffusers_kwargs(dit_cfg: ml_collections.ConfigDict) -> dict:
    """Constructor arguments of the equivalent diffusers `WanTransformer3DModel`."""
    i2v = dit_cfg.variant == "i2v"
    return dict(
        patch_size=tuple(dit_cfg.patch_size),
        num_attention_heads=dit_cfg.num_heads,
        attention_head_dim=dit_cfg.dim // dit_cfg.num_heads,
        in_channels=dit_cfg.in_channels,
        out_channels=dit_cfg.out_channels,
        text_dim=dit_cfg.text_dim,
        freq_dim=dit_cfg.freq_dim,
        ffn_dim=dit_cfg.ffn_dim,
        num_layers=dit_cfg.num_layers,
        cross_attn_norm=dit_cfg.cross_attn_norm,
        qk_norm="rms_norm_across_heads" if dit_cfg.qk_norm else None,
        eps=dit_cfg.eps,
        image_dim=dit_cfg.image_dim if i2v else None,
        added_kv_proj_dim=dit_cfg.dim if i2v else None,
        rope_max_seq_len=dit_cfg.rope_max_len,
    )


def wan_kwargs(dit_cfg: ml_collections.ConfigDict) -> dict:
    """Constructor arguments of the equivalent Wan2.1 `WanModel` (its config.json)."""
    return dict(
        model_type=dit_cfg.variant,
        patch_size=tuple(dit_cfg.patch_size),
        in_dim=dit_cfg.in_channels,
        dim=dit_cfg.dim,
        ffn_dim=dit_cfg.ffn_dim,
        freq_dim=dit_cfg.freq_dim,
        text_dim=dit_cfg.text_dim,
        out_dim=dit_cfg.out_channels,
        num_heads=dit_cfg.num_heads,
        num_layers=dit_cfg.num_layers,
        qk_norm=dit_cfg.qk_norm,
        cross_attn_norm=dit_cfg.cross_attn_norm,
        eps=dit_cfg.eps,
    )
