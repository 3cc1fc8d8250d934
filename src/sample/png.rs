//! Drawing latents that are images as a PNG grid: tokens of 4 channels that pack a grey image
//! in 2×2 patches (the toy in `shared/toy`: token `r·W + c` holds pixels `(2r + i, 2c + j)` at
//! channel `2i + j`), values in [-1, 1], one tile per sample, one row of tiles per tensor.

use super::Grid;
use crate::error::{Error, Result};
use crate::io::AtomicFile;
use crate::tensor::Tensor;
use std::path::Path;

/// Channels of a token that packs a 2×2 patch of one grey channel.
pub const GREY_PATCH_CHANNELS: usize = 4;
/// Grey level of the gaps between tiles.
const GAP: u8 = 128;

/// Why latents with `channels` per token cannot be drawn, if they cannot.
pub fn refuse_channels(channels: usize) -> Option<String> {
    (channels != GREY_PATCH_CHANNELS).then(|| {
        format!(
            "--png draws latents that are images: tokens of {GREY_PATCH_CHANNELS} channels, 2×2 \
             patches of one grey channel (the toy in shared/toy); this model's tokens have \
             {channels} channels (FLUX.1's are 2×2 patches of 16 VAE channels: decode the \
             written latents with the model's VAE instead)"
        )
    })
}

/// Writes `rows` (each `[P, N, 4]` latents on `grid`) as one grey PNG: row k of tiles is
/// `rows[k]`, tile p its sample p, each pixel drawn `scale`×`scale`, a gap of `scale` pixels
/// between tiles. Atomic: nothing is left at `path` on failure.
pub fn write_grid(path: &Path, rows: &[&Tensor], grid: Grid, scale: usize) -> Result<()> {
    let scale = scale.max(1);
    let columns = rows.iter().map(|t| t.shape[0]).max().unwrap_or(0);
    for t in rows {
        if t.shape.len() != 3 || t.shape[1] != grid.tokens() {
            return Err(Error::Internal(format!(
                "latents `{}` of shape {:?} are not on a {grid} grid",
                t.name, t.shape
            )));
        }
        if let Some(why) = refuse_channels(t.shape[2]) {
            return Err(Error::Usage(why));
        }
    }
    let (tile_h, tile_w) = (2 * grid.rows * scale, 2 * grid.cols * scale);
    let width = columns * (tile_w + scale) + scale;
    let height = rows.len() * (tile_h + scale) + scale;
    let mut pixels = vec![GAP; width * height];
    for (k, t) in rows.iter().enumerate() {
        let per_sample = grid.tokens() * GREY_PATCH_CHANNELS;
        for (p, sample) in t.data.chunks_exact(per_sample).enumerate() {
            let (top, left) = (scale + k * (tile_h + scale), scale + p * (tile_w + scale));
            for y in 0..2 * grid.rows {
                for x in 0..2 * grid.cols {
                    let token = (y / 2) * grid.cols + x / 2;
                    let v = sample[token * GREY_PATCH_CHANNELS + 2 * (y % 2) + x % 2];
                    let grey = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                    for dy in 0..scale {
                        let row = (top + y * scale + dy) * width + left + x * scale;
                        pixels[row..row + scale].fill(grey);
                    }
                }
            }
        }
    }
    let target = AtomicFile::new(path)?;
    let fail = |e: png::EncodingError| Error::file(path, format!("encoding the PNG: {e}"));
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(&pixels).map_err(fail)?;
    writer.finish().map_err(fail)?;
    target.write_all(&bytes)?;
    target.commit()
}
