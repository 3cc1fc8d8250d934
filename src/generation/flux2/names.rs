//! FLUX.2's naming table, as `flux1/names.rs` is FLUX.1's: every parameter once, in the original
//! (BFL) naming, with the modules diffusers' `Flux2Transformer2DModel` stores it in. What sets
//! it apart from FLUX.1: the adaptive-norm modulation is shared by all blocks of a kind and lives
//! at the top level; there is no pooled text vector; the MLPs are SwiGLU (the input projection
//! holds the gate's rows, then the value's: twice the MLP width); no linear has a bias. diffusers
//! keeps a single block's fused input projection fused (`attn.to_qkv_mlp_proj`) and, as for
//! FLUX.1, stores the final modulation as (scale, shift) where BFL has (shift, scale).

use crate::generation::entry::{SCALE, adapted, guidance, param};
use crate::generation::table::{
    BlockNames, Diffusers, Dim, Kind, Layer, NamingTable, Role, Scope, Stream, Width, h, hm, w,
};

use Diffusers::{Renamed, Stacked, SwappedHalves};
use Scope::{Double, Single, Top};
use Stream::{Img, Joint, Txt};

/// A Linear without a bias (no FLUX.2 linear has one).
const fn linear(out: Dim, inp: Dim) -> Kind {
    Kind::Linear {
        out,
        inp,
        bias: false,
    }
}

pub static NAMES: NamingTable = NamingTable {
    generation: "FLUX.2",
    double: BlockNames {
        bfl: "double_blocks",
        diffusers: "transformer_blocks",
    },
    single: BlockNames {
        bfl: "single_blocks",
        diffusers: "single_transformer_blocks",
    },
    params: &[
        // Embedders: no pooled vector.
        param(
            Role::ImgIn,
            Top,
            "img_in",
            linear(h(1), w(Width::InChannels)),
            Renamed("x_embedder"),
        ),
        param(
            Role::TxtIn,
            Top,
            "txt_in",
            linear(h(1), w(Width::Context)),
            Renamed("context_embedder"),
        ),
        param(
            Role::TimeIn(Layer::In),
            Top,
            "time_in.in_layer",
            linear(h(1), w(Width::TimeEmbed)),
            Renamed("time_guidance_embed.timestep_embedder.linear_1"),
        ),
        param(
            Role::TimeIn(Layer::Out),
            Top,
            "time_in.out_layer",
            linear(h(1), h(1)),
            Renamed("time_guidance_embed.timestep_embedder.linear_2"),
        ),
        guidance(
            Role::GuidanceIn(Layer::In),
            "guidance_in.in_layer",
            linear(h(1), w(Width::TimeEmbed)),
            Renamed("time_guidance_embed.guidance_embedder.linear_1"),
        ),
        guidance(
            Role::GuidanceIn(Layer::Out),
            "guidance_in.out_layer",
            linear(h(1), h(1)),
            Renamed("time_guidance_embed.guidance_embedder.linear_2"),
        ),
        // Modulation: one per stream, shared by every block of its kind.
        param(
            Role::Modulation(Img),
            Top,
            "double_stream_modulation_img.lin",
            linear(h(6), h(1)),
            Renamed("double_stream_modulation_img.linear"),
        ),
        param(
            Role::Modulation(Txt),
            Top,
            "double_stream_modulation_txt.lin",
            linear(h(6), h(1)),
            Renamed("double_stream_modulation_txt.linear"),
        ),
        param(
            Role::Modulation(Joint),
            Top,
            "single_stream_modulation.lin",
            linear(h(3), h(1)),
            Renamed("single_stream_modulation.linear"),
        ),
        // Double blocks: each stream has its own weights. Sandwich training adapts the same
        // linears as in FLUX.1; no XLabs LoRAs exist for FLUX.2.
        adapted(
            Role::Qkv(Img),
            Double,
            "img_attn.qkv",
            linear(h(3), h(1)),
            Stacked(&[
                ("attn.to_q", h(1)),
                ("attn.to_k", h(1)),
                ("attn.to_v", h(1)),
            ]),
            None,
        ),
        adapted(
            Role::Qkv(Txt),
            Double,
            "txt_attn.qkv",
            linear(h(3), h(1)),
            Stacked(&[
                ("attn.add_q_proj", h(1)),
                ("attn.add_k_proj", h(1)),
                ("attn.add_v_proj", h(1)),
            ]),
            None,
        ),
        param(
            Role::QueryNorm(Img),
            Double,
            "img_attn.norm.query_norm",
            SCALE,
            Renamed("attn.norm_q"),
        ),
        param(
            Role::KeyNorm(Img),
            Double,
            "img_attn.norm.key_norm",
            SCALE,
            Renamed("attn.norm_k"),
        ),
        param(
            Role::QueryNorm(Txt),
            Double,
            "txt_attn.norm.query_norm",
            SCALE,
            Renamed("attn.norm_added_q"),
        ),
        param(
            Role::KeyNorm(Txt),
            Double,
            "txt_attn.norm.key_norm",
            SCALE,
            Renamed("attn.norm_added_k"),
        ),
        adapted(
            Role::Proj(Img),
            Double,
            "img_attn.proj",
            linear(h(1), h(1)),
            Renamed("attn.to_out.0"),
            None,
        ),
        adapted(
            Role::Proj(Txt),
            Double,
            "txt_attn.proj",
            linear(h(1), h(1)),
            Renamed("attn.to_add_out"),
            None,
        ),
        // SwiGLU: the input projection's rows are the gate's, then the value's.
        adapted(
            Role::MlpIn(Img),
            Double,
            "img_mlp.0",
            linear(hm(0, 2), h(1)),
            Renamed("ff.linear_in"),
            None,
        ),
        adapted(
            Role::MlpOut(Img),
            Double,
            "img_mlp.2",
            linear(h(1), hm(0, 1)),
            Renamed("ff.linear_out"),
            None,
        ),
        adapted(
            Role::MlpIn(Txt),
            Double,
            "txt_mlp.0",
            linear(hm(0, 2), h(1)),
            Renamed("ff_context.linear_in"),
            None,
        ),
        adapted(
            Role::MlpOut(Txt),
            Double,
            "txt_mlp.2",
            linear(h(1), hm(0, 1)),
            Renamed("ff_context.linear_out"),
            None,
        ),
        // Single blocks: one fused input projection, [q | k | v | SwiGLU gate | value], which
        // diffusers keeps fused.
        adapted(
            Role::FusedIn,
            Single,
            "linear1",
            linear(hm(3, 2), h(1)),
            Renamed("attn.to_qkv_mlp_proj"),
            None,
        ),
        adapted(
            Role::FusedOut,
            Single,
            "linear2",
            linear(h(1), hm(1, 1)),
            Renamed("attn.to_out"),
            None,
        ),
        param(
            Role::QueryNorm(Joint),
            Single,
            "norm.query_norm",
            SCALE,
            Renamed("attn.norm_q"),
        ),
        param(
            Role::KeyNorm(Joint),
            Single,
            "norm.key_norm",
            SCALE,
            Renamed("attn.norm_k"),
        ),
        // Final layer: diffusers stores the modulation as (scale, shift), BFL as (shift, scale).
        param(
            Role::FinalModulation,
            Top,
            "final_layer.adaLN_modulation.1",
            linear(h(2), h(1)),
            SwappedHalves("norm_out.linear"),
        ),
        param(
            Role::FinalLinear,
            Top,
            "final_layer.linear",
            linear(w(Width::OutChannels), h(1)),
            Renamed("proj_out"),
        ),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_and_module_once() {
        for (i, p) in NAMES.params.iter().enumerate() {
            for q in &NAMES.params[i + 1..] {
                assert_ne!(p.role, q.role);
                assert!(p.scope != q.scope || p.bfl != q.bfl, "{}", p.bfl);
            }
        }
    }

    #[test]
    fn no_bias_and_no_block_modulation() {
        for p in NAMES.params {
            assert!(
                !matches!(p.kind, Kind::Linear { bias: true, .. }),
                "{}",
                p.bfl
            );
            if matches!(p.role, Role::Modulation(_)) {
                assert_eq!(p.scope, Top, "{}", p.bfl);
            }
        }
    }
}
