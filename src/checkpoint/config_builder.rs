//! A builder for [`FluxConfig`], for tests and examples that need a configuration without a
//! checkpoint to infer it from. It starts from the golden tiny-dev model and fills the fields
//! the lifter derives from a checkpoint's shapes (the head count, the MLP width) the same way.

use super::config::FluxConfig;

/// FLUX's MLP is four times the hidden size wide (`mlp_ratio` 4).
const MLP_RATIO: usize = 4;

impl FluxConfig {
    /// A builder starting from the golden tiny-dev model (`golden/tiny-dev/meta.json`): hidden
    /// size 64 in 4 heads of 16, MLP width 256, 2 double and 4 single blocks, 16 channels in and
    /// out, text context 32, pooled vector 24, timestep embedding 256, a guidance embedding, RoPE
    /// axes `[4, 6, 6]` with theta 10 000.
    ///
    /// A test and example convenience: a real model's configuration comes from
    /// [`FluxConfig::infer`].
    pub fn builder() -> FluxConfigBuilder {
        FluxConfigBuilder {
            hidden: 64,
            head_dim: 16,
            mlp_hidden: None,
            blocks: (2, 4),
            channels: (16, 16),
            context_dim: 32,
            pooled_dim: 24,
            time_embed_dim: 256,
            guidance: true,
            axes_dim: vec![4, 6, 6],
        }
    }
}

/// Builds a [`FluxConfig`]; see [`FluxConfig::builder`] for the starting point.
#[derive(Clone, Debug)]
pub struct FluxConfigBuilder {
    hidden: usize,
    head_dim: usize,
    /// `None`: [`MLP_RATIO`] times the hidden size, whatever the hidden size ends up being.
    mlp_hidden: Option<usize>,
    blocks: (usize, usize),
    channels: (usize, usize),
    context_dim: usize,
    pooled_dim: usize,
    time_embed_dim: usize,
    guidance: bool,
    axes_dim: Vec<usize>,
}

impl FluxConfigBuilder {
    /// The hidden size; the head count follows from it and the head width.
    pub fn hidden(mut self, hidden: usize) -> Self {
        self.hidden = hidden;
        self
    }

    /// The width of one attention head (128 in FLUX.1); keep the RoPE axes adding up to it.
    pub fn head_dim(mut self, head_dim: usize) -> Self {
        self.head_dim = head_dim;
        self
    }

    /// The MLP width, if not four times the hidden size.
    pub fn mlp_hidden(mut self, mlp_hidden: usize) -> Self {
        self.mlp_hidden = Some(mlp_hidden);
        self
    }

    /// The number of double-stream and single-stream blocks.
    pub fn blocks(mut self, double: usize, single: usize) -> Self {
        self.blocks = (double, single);
        self
    }

    /// The latent channels the model takes in and gives out.
    pub fn channels(mut self, input: usize, output: usize) -> Self {
        self.channels = (input, output);
        self
    }

    /// The width of the text encoder's token embeddings (T5's 4096 in FLUX.1).
    pub fn context_dim(mut self, context_dim: usize) -> Self {
        self.context_dim = context_dim;
        self
    }

    /// The width of the pooled text vector (CLIP's 768 in FLUX.1).
    pub fn pooled_dim(mut self, pooled_dim: usize) -> Self {
        self.pooled_dim = pooled_dim;
        self
    }

    /// The width of the sinusoidal timestep (and guidance) embedding.
    pub fn time_embed_dim(mut self, time_embed_dim: usize) -> Self {
        self.time_embed_dim = time_embed_dim;
        self
    }

    /// Whether the model has a guidance embedding (dev: yes, schnell: no).
    pub fn guidance(mut self, guidance: bool) -> Self {
        self.guidance = guidance;
        self
    }

    /// The RoPE axes: even widths adding up to the head width.
    pub fn axes_dim(mut self, axes_dim: Vec<usize>) -> Self {
        self.axes_dim = axes_dim;
        self
    }

    /// The configuration.
    ///
    /// # Panics
    ///
    /// If the head width does not divide the hidden size, or the RoPE axes do not add up to the
    /// head width: configurations no checkpoint can have, so a mistake in the calling test.
    pub fn build(self) -> FluxConfig {
        let (hidden, head_dim) = (self.hidden, self.head_dim);
        assert!(
            head_dim != 0 && hidden % head_dim == 0,
            "head width {head_dim} does not divide the hidden size {hidden}"
        );
        assert_eq!(
            self.axes_dim.iter().sum::<usize>(),
            head_dim,
            "RoPE axes {:?} do not add up to the head width",
            self.axes_dim
        );
        FluxConfig {
            hidden,
            heads: hidden / head_dim,
            head_dim,
            mlp_hidden: self.mlp_hidden.unwrap_or(MLP_RATIO * hidden),
            double_blocks: self.blocks.0,
            single_blocks: self.blocks.1,
            in_channels: self.channels.0,
            out_channels: self.channels.1,
            context_dim: self.context_dim,
            pooled_dim: self.pooled_dim,
            time_embed_dim: self.time_embed_dim,
            guidance: self.guidance,
            axes_dim: self.axes_dim,
            theta: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_mlp_width_follow_the_hidden_size() {
        let config = FluxConfig::builder()
            .hidden(512)
            .head_dim(128)
            .axes_dim(vec![16, 56, 56])
            .build();
        assert_eq!((config.heads, config.mlp_hidden), (4, 2048));
        let config = FluxConfig::builder().mlp_hidden(100).build();
        assert_eq!(config.mlp_hidden, 100);
    }

    #[test]
    #[should_panic(expected = "do not add up to the head width")]
    fn axes_that_do_not_fit_the_head_are_a_mistake() {
        FluxConfig::builder().head_dim(32).build();
    }
}
