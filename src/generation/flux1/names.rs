//! FLUX.1's naming table: every parameter once, in the original (BFL) naming, with the modules
//! diffusers' `FluxTransformer2DModel` stores it in (q, k and v split out of the fused
//! projections, a single block's `linear1` split into them and `proj_mlp`, the final
//! modulation's halves swapped), its shape, and what LoRA trainers and sandwich training make
//! of it. Everything that names a FLUX.1 parameter reads it from here.

use crate::generation::entry::{SCALE, adapted, guidance, param, xlabs};
use crate::generation::table::{
    BlockNames, Diffusers, Dim, Kind, Layer, NamingTable, Role, Scope, Stream, Width, XLabs, h, hm,
    w,
};

use Diffusers::{Renamed, Stacked, SwappedHalves};
use Scope::{Double, Single, Top};
use Stream::{Img, Joint, Txt};

/// A Linear with a bias (every FLUX.1 linear has one).
const fn linear(out: Dim, inp: Dim) -> Kind {
    Kind::Linear {
        out,
        inp,
        bias: true,
    }
}

pub static NAMES: NamingTable = NamingTable {
    generation: "FLUX.1",
    double: BlockNames {
        bfl: "double_blocks",
        diffusers: "transformer_blocks",
    },
    single: BlockNames {
        bfl: "single_blocks",
        diffusers: "single_transformer_blocks",
    },
    params: &[
        // Embedders.
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
            Renamed("time_text_embed.timestep_embedder.linear_1"),
        ),
        param(
            Role::TimeIn(Layer::Out),
            Top,
            "time_in.out_layer",
            linear(h(1), h(1)),
            Renamed("time_text_embed.timestep_embedder.linear_2"),
        ),
        guidance(
            Role::GuidanceIn(Layer::In),
            "guidance_in.in_layer",
            linear(h(1), w(Width::TimeEmbed)),
            Renamed("time_text_embed.guidance_embedder.linear_1"),
        ),
        guidance(
            Role::GuidanceIn(Layer::Out),
            "guidance_in.out_layer",
            linear(h(1), h(1)),
            Renamed("time_text_embed.guidance_embedder.linear_2"),
        ),
        param(
            Role::VectorIn(Layer::In),
            Top,
            "vector_in.in_layer",
            linear(h(1), w(Width::Pooled)),
            Renamed("time_text_embed.text_embedder.linear_1"),
        ),
        param(
            Role::VectorIn(Layer::Out),
            Top,
            "vector_in.out_layer",
            linear(h(1), h(1)),
            Renamed("time_text_embed.text_embedder.linear_2"),
        ),
        // Double blocks: each stream has its own weights.
        param(
            Role::Modulation(Img),
            Double,
            "img_mod.lin",
            linear(h(6), h(1)),
            Renamed("norm1.linear"),
        ),
        param(
            Role::Modulation(Txt),
            Double,
            "txt_mod.lin",
            linear(h(6), h(1)),
            Renamed("norm1_context.linear"),
        ),
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
            xlabs("qkv_lora1"),
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
            xlabs("qkv_lora2"),
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
            xlabs("proj_lora1"),
        ),
        adapted(
            Role::Proj(Txt),
            Double,
            "txt_attn.proj",
            linear(h(1), h(1)),
            Renamed("attn.to_add_out"),
            xlabs("proj_lora2"),
        ),
        adapted(
            Role::MlpIn(Img),
            Double,
            "img_mlp.0",
            linear(hm(0, 1), h(1)),
            Renamed("ff.net.0.proj"),
            None,
        ),
        adapted(
            Role::MlpOut(Img),
            Double,
            "img_mlp.2",
            linear(h(1), hm(0, 1)),
            Renamed("ff.net.2"),
            None,
        ),
        adapted(
            Role::MlpIn(Txt),
            Double,
            "txt_mlp.0",
            linear(hm(0, 1), h(1)),
            Renamed("ff_context.net.0.proj"),
            None,
        ),
        adapted(
            Role::MlpOut(Txt),
            Double,
            "txt_mlp.2",
            linear(h(1), hm(0, 1)),
            Renamed("ff_context.net.2"),
            None,
        ),
        // Single blocks: one fused input projection, [q | k | v | MLP input].
        param(
            Role::Modulation(Joint),
            Single,
            "modulation.lin",
            linear(h(3), h(1)),
            Renamed("norm.linear"),
        ),
        adapted(
            Role::FusedIn,
            Single,
            "linear1",
            linear(hm(3, 1), h(1)),
            Stacked(&[
                ("attn.to_q", h(1)),
                ("attn.to_k", h(1)),
                ("attn.to_v", h(1)),
                ("proj_mlp", hm(0, 1)),
            ]),
            // XLabs' single-block qkv LoRA adds to the attention rows only.
            Some(XLabs {
                processor: "qkv_lora",
                rows: Some(h(3)),
            }),
        ),
        adapted(
            Role::FusedOut,
            Single,
            "linear2",
            linear(h(1), hm(1, 1)),
            Renamed("proj_out"),
            xlabs("proj_lora"),
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
    use crate::generation::table::{Feature, Sizes};

    /// FLUX.1 [dev]'s real sizes.
    struct Dev;

    impl Sizes for Dev {
        fn width(&self, width: Width) -> usize {
            match width {
                Width::Hidden => 3072,
                Width::Mlp => 4 * 3072,
                Width::HeadDim => 128,
                Width::InChannels | Width::OutChannels => 64,
                Width::Context => 4096,
                Width::Pooled => 768,
                Width::TimeEmbed => 256,
            }
        }

        fn blocks(&self, scope: Scope) -> usize {
            match scope {
                Top => 1,
                Double => 19,
                Single => 38,
            }
        }

        fn has(&self, _: Feature) -> bool {
            true
        }
    }

    #[test]
    fn dev_has_its_published_parameter_count() {
        let params = NAMES.parameters(&Dev);
        let count: usize = params
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(count, 11_901_408_320);
        assert_eq!(params.len(), 780);
    }

    #[test]
    fn split_modules_cover_the_rows_of_the_fused_one() {
        for p in NAMES.params {
            let Kind::Linear { out, .. } = p.kind else {
                continue;
            };
            if let Stacked(parts) = p.diffusers {
                let rows: usize = parts.iter().map(|(_, d)| d.of(&Dev)).sum();
                assert_eq!(rows, out.of(&Dev), "{}", p.bfl);
            }
        }
    }

    #[test]
    fn every_role_and_module_once() {
        for (i, p) in NAMES.params.iter().enumerate() {
            for q in &NAMES.params[i + 1..] {
                assert_ne!(p.role, q.role);
                assert!(p.scope != q.scope || p.bfl != q.bfl, "{}", p.bfl);
            }
        }
    }
}
