//! Per-image noise. Image `i` of a run with seed `s` draws x_T and every
//! step's variance noise from its own stream, so the same (seed, index)
//! gives the same image alone, in any batch size, or regenerated later.

use crate::rng::Rng;

/// The noise of a batch of images `first..first + count` of one seed, each
/// image (C, H, W) = `per_image` values.
#[derive(Clone, Debug)]
pub struct NoiseStreams {
    streams: Vec<Rng>,
    per_image: usize,
}

impl NoiseStreams {
    pub fn new(seed: u64, first: u64, count: usize, per_image: usize) -> NoiseStreams {
        let streams = (0..count as u64).map(|i| Rng::stream(seed.wrapping_add(first + i), "image noise")).collect();
        NoiseStreams { streams, per_image }
    }

    /// The next draw of every image, (count, C, H, W): the first call gives
    /// x_T, each later one a step's variance noise.
    pub fn next_batch(&mut self) -> Vec<f32> {
        let mut out = vec![0f32; self.streams.len() * self.per_image];
        for (rng, chunk) in self.streams.iter_mut().zip(out.chunks_mut(self.per_image)) {
            rng.fill_normal(chunk);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_draws_the_same_noise_in_any_batch() {
        let per = 12;
        let mut batch = NoiseStreams::new(5, 0, 4, per);
        let mut alone = NoiseStreams::new(5, 2, 1, per);
        for _ in 0..3 {
            let b = batch.next_batch();
            let a = alone.next_batch();
            assert_eq!(&b[2 * per..3 * per], &a[..]);
        }
        let mut other_seed = NoiseStreams::new(6, 2, 1, per);
        assert_ne!(other_seed.next_batch(), NoiseStreams::new(5, 2, 1, per).next_batch());
    }
}
