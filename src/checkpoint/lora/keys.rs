//! The key grammar of LoRA files: which tensor is a module's down matrix, up matrix or alpha,
//! whatever the naming (`lora_A`/`lora_B`, kohya's `lora_down`/`lora_up`, XLabs' `down`/`up`),
//! and the grouping of a file's keys by module.

use std::collections::BTreeMap;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Role {
    Down,
    Up,
    Alpha,
}

/// Each suffix, its role, and the suffix of its other half. Longer suffixes come first where
/// one ends another (`.lora_down.weight` is not `.down.weight`: the character before differs).
const SUFFIXES: [(&str, Role, &str); 7] = [
    (".lora_A.weight", Role::Down, ".lora_B.weight"),
    (".lora_B.weight", Role::Up, ".lora_A.weight"),
    (".lora_down.weight", Role::Down, ".lora_up.weight"),
    (".lora_up.weight", Role::Up, ".lora_down.weight"),
    (".down.weight", Role::Down, ".up.weight"),
    (".up.weight", Role::Up, ".down.weight"),
    (".alpha", Role::Alpha, ""),
];

/// The keys of one LoRA module's tensors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleKeys {
    pub down: Option<String>,
    pub up: Option<String>,
    pub alpha: Option<String>,
}

impl ModuleKeys {
    pub fn all(&self) -> impl Iterator<Item = &String> {
        [&self.down, &self.up, &self.alpha].into_iter().flatten()
    }
}

/// A file's keys by module, and the keys that are no LoRA tensor at all (DoRA magnitudes,
/// bias deltas, …).
#[derive(Debug, Default)]
pub struct Grouped {
    pub modules: BTreeMap<String, ModuleKeys>,
    pub stray: Vec<String>,
}

/// Groups `keys` by module. Two keys with the same role for one module (`x.lora_A.weight` and
/// `x.lora_down.weight`) are an error: `Err((key, other))`.
pub fn group<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Grouped, (String, String)> {
    let mut grouped = Grouped::default();
    for key in keys {
        let Some((module, role)) = SUFFIXES
            .iter()
            .find_map(|(suffix, role, _)| Some((key.strip_suffix(suffix)?, *role)))
        else {
            grouped.stray.push(key.to_owned());
            continue;
        };
        let entry = grouped.modules.entry(module.to_owned()).or_default();
        let slot = match role {
            Role::Down => &mut entry.down,
            Role::Up => &mut entry.up,
            Role::Alpha => &mut entry.alpha,
        };
        if let Some(other) = slot {
            return Err((key.to_owned(), other.clone()));
        }
        *slot = Some(key.to_owned());
    }
    Ok(grouped)
}

/// The key the other half of the matrix `key` would have (`….lora_up.weight` for
/// `….lora_down.weight`).
pub fn other_half(key: &str) -> Option<String> {
    SUFFIXES.iter().find_map(|(suffix, role, other)| {
        let module = key.strip_suffix(suffix)?;
        (*role != Role::Alpha).then(|| format!("{module}{other}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_every_naming_by_module() {
        let keys = [
            "lora_unet_x.lora_down.weight",
            "lora_unet_x.lora_up.weight",
            "lora_unet_x.alpha",
            "transformer.a.to_q.lora_A.weight",
            "double_blocks.0.processor.qkv_lora1.up.weight",
            "transformer.a.to_q.lora_magnitude_vector",
        ];
        let g = group(keys).unwrap();
        let x = &g.modules["lora_unet_x"];
        assert_eq!(x.all().count(), 3);
        assert_eq!(g.modules["transformer.a.to_q"].up, None);
        assert!(
            g.modules["double_blocks.0.processor.qkv_lora1"]
                .down
                .is_none()
        );
        assert_eq!(g.stray, ["transformer.a.to_q.lora_magnitude_vector"]);
    }

    #[test]
    fn names_the_other_half_and_refuses_duplicates() {
        assert_eq!(other_half("m.lora_A.weight").unwrap(), "m.lora_B.weight");
        assert_eq!(
            other_half("m.lora_up.weight").unwrap(),
            "m.lora_down.weight"
        );
        assert_eq!(other_half("m.alpha"), None);
        let dup = group(["m.lora_A.weight", "m.lora_down.weight"]).unwrap_err();
        assert_eq!(dup.1, "m.lora_A.weight");
    }
}
