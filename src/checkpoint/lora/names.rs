//! Where a LoRA module of each supported naming lands among the canonical (BFL) weights: the
//! weight, the rows of it the delta covers (diffusers' split projections cover a row range of
//! the fused original), and whether diffusers' naming stores the two halves of its rows swapped.
//!
//! The tables are built from the weights that exist (the configuration's parameters and any
//! weight node the graph holds, such as fitted BRLL nodes), never by guessing at spellings:
//! kohya's `lora_unet_double_blocks_0_img_attn_qkv` is found by looking it up among the known
//! module names with '.' written as '_'.

use crate::checkpoint::FluxConfig;
use crate::checkpoint::naming::{Layout, diffusers_module};
use crate::generation::flux1::NAMES;
use crate::generation::table::{Scope, Sizes};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

/// The key naming a LoRA module was written in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// diffusers / peft: `transformer.transformer_blocks.0.attn.to_q.lora_A.weight`.
    Peft,
    /// kohya / sd-scripts: `lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`.
    Kohya,
    /// The original (BFL) module names: `double_blocks.0.img_attn.qkv.lora_A.weight`.
    Original,
    /// XLabs' attention processors: `double_blocks.0.processor.qkv_lora1.down.weight`.
    XLabs,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Peft => "diffusers/peft",
            Self::Kohya => "kohya",
            Self::Original => "original (BFL)",
            Self::XLabs => "XLabs",
        })
    }
}

/// What one LoRA module updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The canonical weight, e.g. `double_blocks.0.img_attn.qkv.weight`.
    pub weight: String,
    /// The weight's shape `[out, in]`.
    pub shape: [usize; 2],
    /// The rows of the weight that the up matrix's rows land on.
    pub rows: Range<usize>,
    /// The up matrix's row halves are stored swapped relative to the canonical weight.
    pub swap_halves: bool,
}

/// Prefixes that trainers put in front of module names of the model itself.
const PREFIXES: [&str; 4] = [
    "model.diffusion_model.",
    "diffusion_model.",
    "transformer.",
    "base_model.model.",
];

pub struct ModuleNames {
    /// Every known linear module (canonical name, without `.weight`) and its weight's shape.
    shapes: BTreeMap<String, [usize; 2]>,
    /// Module names with '.' written as '_' → the module; `None` where two names collide.
    underscored: HashMap<String, Option<String>>,
    /// diffusers module → where it lands.
    diffusers: HashMap<String, Target>,
    /// diffusers module names with '.' written as '_' → the diffusers module.
    diffusers_underscored: HashMap<String, Option<String>>,
    /// The sizes the table's row counts are read at.
    config: FluxConfig,
}

impl ModuleNames {
    /// The tables for a model of `config` whose graph also holds `extra` weights (name, shape),
    /// such as BRLL's fitted linear nodes.
    pub fn new<'a>(
        config: &FluxConfig,
        extra: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Self {
        let linear = |name: &str, shape: &[usize]| {
            let module = name.strip_suffix(".weight")?;
            let &[rows, cols] = shape else { return None };
            Some((module.to_owned(), [rows, cols]))
        };
        let params = config.parameters();
        let shapes: BTreeMap<String, [usize; 2]> = params
            .iter()
            .filter_map(|(n, s)| linear(n, s))
            .chain(extra.into_iter().filter_map(|(n, s)| linear(n, s)))
            .collect();
        let mut diffusers = HashMap::new();
        for (module, &shape) in &shapes {
            for (name, target) in diffusers_targets(module, shape, config) {
                diffusers.insert(name, target);
            }
        }
        Self {
            underscored: underscore_table(shapes.keys()),
            diffusers_underscored: underscore_table(diffusers.keys()),
            shapes,
            diffusers,
            config: config.clone(),
        }
    }

    /// Where the LoRA module written as `path` lands; `None` if it is no known module.
    pub fn resolve(&self, path: &str) -> Option<(Format, Target)> {
        if let Some(rest) = path.strip_prefix("lora_unet_") {
            let module = self.underscored.get(rest)?.as_deref()?;
            return Some((Format::Kohya, self.whole(module)?));
        }
        if let Some(rest) = path.strip_prefix("lora_transformer_") {
            let module = self.diffusers_underscored.get(rest)?.as_deref()?;
            return Some((Format::Kohya, self.diffusers.get(module)?.clone()));
        }
        let path = PREFIXES
            .iter()
            .find_map(|p| path.strip_prefix(p))
            .unwrap_or(path);
        if let Some((block, lora)) = path.split_once(".processor.") {
            return Some((Format::XLabs, self.xlabs(block, lora)?));
        }
        if let Some(target) = self.diffusers.get(path) {
            return Some((Format::Peft, target.clone()));
        }
        Some((Format::Original, self.whole(path)?))
    }

    /// All rows of a known module.
    fn whole(&self, module: &str) -> Option<Target> {
        let shape = *self.shapes.get(module)?;
        Some(Target {
            weight: format!("{module}.weight"),
            shape,
            rows: 0..shape[0],
            swap_halves: false,
        })
    }

    /// XLabs' processors (`double_blocks.0.processor.qkv_lora1`): the table names the module
    /// each adds to, and the rows where it covers only part of one (a single block's
    /// `qkv_lora` adds to the attention rows of `linear1`).
    fn xlabs(&self, block: &str, lora: &str) -> Option<Target> {
        let kind = block.split('.').next()?;
        let scope = [Scope::Double, Scope::Single]
            .into_iter()
            .find(|&s| NAMES.block_kind(s) == Some(kind))?;
        let (param, xlabs) = NAMES.xlabs(scope, lora)?;
        let mut target = self.whole(&format!("{block}.{}", param.bfl))?;
        if let Some(rows) = xlabs.rows {
            target.rows = 0..rows.of(&self.config);
        }
        Some(target)
    }
}

/// The diffusers modules that store parts of canonical `module`, each with the rows it covers:
/// the table's for the model's modules, all rows for the fitted nodes BRLL adds.
pub(super) fn diffusers_targets(
    module: &str,
    shape: [usize; 2],
    sizes: &dyn Sizes,
) -> Vec<(String, Target)> {
    let target = |rows: Range<usize>, swap_halves| Target {
        weight: format!("{module}.weight"),
        shape,
        rows,
        swap_halves,
    };
    if let Some(found) = NAMES.find(module) {
        let (parts, swapped) = NAMES.diffusers_rows(found, sizes);
        return parts
            .into_iter()
            .map(|(name, rows)| (name, target(rows, swapped)))
            .collect();
    }
    match diffusers_module(module) {
        Some(Layout::Direct(name)) => vec![(name, target(0..shape[0], false))],
        _ => Vec::new(),
    }
}

/// `a.b_c.0` → `a_b_c_0` for each name; names that collide map to `None` (ambiguous).
fn underscore_table<'a>(
    names: impl Iterator<Item = &'a String>,
) -> HashMap<String, Option<String>> {
    let mut table: HashMap<String, Option<String>> = HashMap::new();
    for name in names {
        table
            .entry(name.replace('.', "_"))
            .and_modify(|e| *e = None)
            .or_insert_with(|| Some(name.clone()));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> FluxConfig {
        FluxConfig::builder().build()
    }

    fn rows(names: &ModuleNames, path: &str) -> (String, Range<usize>, bool) {
        let (_, t) = names.resolve(path).unwrap();
        (t.weight, t.rows, t.swap_halves)
    }

    #[test]
    fn diffusers_split_projections_land_on_row_ranges() {
        let names = ModuleNames::new(&tiny(), []);
        let qkv = "double_blocks.1.img_attn.qkv.weight".to_owned();
        let txt = "double_blocks.1.txt_attn.qkv.weight".to_owned();
        let l1 = "single_blocks.2.linear1.weight".to_owned();
        let t = "transformer.transformer_blocks.1.attn";
        let s = "transformer.single_transformer_blocks.2";
        assert_eq!(
            rows(&names, &format!("{t}.to_q")),
            (qkv.clone(), 0..64, false)
        );
        assert_eq!(
            rows(&names, &format!("{t}.to_k")),
            (qkv.clone(), 64..128, false)
        );
        assert_eq!(rows(&names, &format!("{t}.to_v")), (qkv, 128..192, false));
        assert_eq!(
            rows(&names, &format!("{t}.add_k_proj")),
            (txt, 64..128, false)
        );
        assert_eq!(
            rows(&names, &format!("{s}.attn.to_v")),
            (l1.clone(), 128..192, false)
        );
        assert_eq!(
            rows(&names, &format!("{s}.proj_mlp")),
            (l1, 192..448, false)
        );
        let final_mod = "final_layer.adaLN_modulation.1.weight".to_owned();
        assert_eq!(rows(&names, "norm_out.linear"), (final_mod, 0..128, true));
    }

    #[test]
    fn every_naming_finds_the_same_weight() {
        let names = ModuleNames::new(&tiny(), []);
        let expected = "double_blocks.0.txt_attn.proj.weight";
        for path in [
            "lora_unet_double_blocks_0_txt_attn_proj",
            "lora_transformer_transformer_blocks_0_attn_to_add_out",
            "transformer.transformer_blocks.0.attn.to_add_out",
            "double_blocks.0.txt_attn.proj",
            "diffusion_model.double_blocks.0.txt_attn.proj",
            "double_blocks.0.processor.proj_lora2",
        ] {
            let (_, t) = names.resolve(path).unwrap();
            assert_eq!((t.weight.as_str(), t.rows), (expected, 0..64), "{path}");
        }
        let (format, t) = names.resolve("single_blocks.3.processor.qkv_lora").unwrap();
        assert_eq!((format, t.rows), (Format::XLabs, 0..192));
    }

    #[test]
    fn unknown_modules_and_extra_weights() {
        let fitted = [64usize, 64];
        let names = ModuleNames::new(&tiny(), [("double_blocks.1.brll.img.weight", &fitted[..])]);
        assert!(
            names
                .resolve("lora_unet_double_blocks_9_img_attn_qkv")
                .is_none()
        );
        assert!(
            names
                .resolve("lora_te1_text_model_encoder_layers_0_mlp_fc1")
                .is_none()
        );
        assert!(
            names
                .resolve("double_blocks.0.processor.qkv_lora3")
                .is_none()
        );
        let (_, t) = names.resolve("lora_unet_double_blocks_1_brll_img").unwrap();
        assert_eq!(t.weight, "double_blocks.1.brll.img.weight");
    }
}
