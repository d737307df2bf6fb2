//! The order training samples are visited in each epoch: a pure function
//! of (seed, epoch), so every data-parallel rank computes the same order
//! and a resumed run continues the interrupted one's.
//!
//! [`Shuffle::Full`] is a uniform permutation: the default, and what a
//! dataset held in memory uses. A dataset read by chunk would decode about
//! one chunk per sample under it, so it uses [`Shuffle::Blocks`]: the blocks
//! (runs of `block` consecutive samples, a stored chunk each) in a random
//! order, then each window of `window` consecutive blocks of that order
//! shuffled as one pool. Only a window's chunks are needed at a time, so
//! with a cache of at least `window` chunks each chunk is decoded once per
//! epoch; within a window, samples of different chunks interleave (FFCV's
//! quasi-random order makes the same trade).

use crate::rng::Rng;

/// How an epoch's order is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shuffle {
    #[default]
    Full,
    Blocks {
        block: usize,
        window: usize,
    },
}

/// The order of samples `0..n` in `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize, shuffle: Shuffle) -> Vec<usize> {
    match shuffle {
        Shuffle::Full => {
            let mut order: Vec<usize> = (0..n).collect();
            Rng::keyed(seed, &[0x7368_7566, epoch as u64]).shuffle(&mut order);
            order
        }
        Shuffle::Blocks { block, window } => {
            let (block, window) = (block.max(1), window.max(1));
            let mut blocks: Vec<usize> = (0..n.div_ceil(block)).collect();
            Rng::keyed(seed, &[0x626c_6f63, epoch as u64]).shuffle(&mut blocks);
            let mut order = Vec::with_capacity(n);
            for (w, group) in blocks.chunks(window).enumerate() {
                let start = order.len();
                for &b in group {
                    order.extend(b * block..((b + 1) * block).min(n));
                }
                Rng::keyed(seed, &[0x7769_6e64, epoch as u64, w as u64])
                    .shuffle(&mut order[start..]);
            }
            order
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_permutation(order: &[usize], n: usize) -> bool {
        let mut seen = vec![false; n];
        order.len() == n
            && order
                .iter()
                .all(|&i| i < n && !std::mem::replace(&mut seen[i], true))
    }

    #[test]
    fn full_shuffle_is_the_historical_order() {
        // The order every run before block shuffles trained with.
        let mut want: Vec<usize> = (0..100).collect();
        Rng::keyed(7, &[0x7368_7566, 3]).shuffle(&mut want);
        assert_eq!(epoch_order(100, 7, 3, Shuffle::Full), want);
    }

    #[test]
    fn blocks_visit_every_sample_once_deterministically() {
        for (n, block, window) in [
            (1000, 64, 4),
            (1001, 64, 3),
            (10, 64, 2),
            (130, 1, 1),
            (0, 8, 2),
        ] {
            let s = Shuffle::Blocks { block, window };
            for epoch in 0..3 {
                let o = epoch_order(n, 5, epoch, s);
                assert!(is_permutation(&o, n), "n {n} block {block} window {window}");
                assert_eq!(
                    o,
                    epoch_order(n, 5, epoch, s),
                    "not a function of (seed, epoch)"
                );
            }
            if n > block {
                assert_ne!(epoch_order(n, 5, 0, s), epoch_order(n, 5, 1, s));
                assert_ne!(epoch_order(n, 5, 0, s), epoch_order(n, 6, 0, s));
            }
        }
    }

    #[test]
    fn each_window_spans_at_most_window_blocks() {
        let (n, block, window) = (1000, 50, 3);
        let o = epoch_order(n, 1, 0, Shuffle::Blocks { block, window });
        for part in o.chunks(block * window) {
            let mut blocks: Vec<usize> = part.iter().map(|i| i / block).collect();
            blocks.sort_unstable();
            blocks.dedup();
            assert!(blocks.len() <= window, "{blocks:?}");
        }
        // Samples of a window interleave: not block after block.
        assert!(o[..block].iter().any(|&i| i / block != o[0] / block));
    }

    #[test]
    fn a_resumed_epoch_continues_the_same_order() {
        // Resuming recomputes the order from (seed, epoch) and skips the
        // batches done: the rest equals the uninterrupted run's rest.
        let s = Shuffle::Blocks {
            block: 32,
            window: 2,
        };
        let whole = epoch_order(500, 9, 4, s);
        let again = epoch_order(500, 9, 4, s);
        assert_eq!(whole[256..], again[256..]);
    }
}
