//! The sliding window of recent answers, kept without a lock: a ring of blocks of `step` answers
//! each, every count an atomic. An answer takes a sequence number (one `fetch_add`), which names
//! its block; it adds itself to that block's counters; the answer that completes a block reads the
//! last `blocks` complete ones ([`Window::observe`] returns them as a [`Snapshot`]) for the
//! monitor to score. Memory is fixed at start whatever the traffic: `blocks + 2` blocks of
//! `labels + bins + 4` counters and the ten colour sums.
//!
//! A block's slot is cleared by the first answer of the block before it, two blocks ahead of any
//! writer, so clearing never races with the answers of the block itself (only an answer delayed by
//! a whole block could land in a cleared slot: it is then not counted, never counted twice).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::model::{COLOUR_FEATURES, ColourFeatures};

/// Fixed point of the colour sums: statistics lie in 0..1, and a block's sum of `step` of them
/// stays far below 2^64 at this scale.
const FIXED: f64 = (1u64 << 32) as f64;

/// What one answer contributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub label: usize,
    /// The confidence's bin in the reference, when the answer has a confidence.
    pub confidence_bin: Option<usize>,
    pub known: Option<bool>,
    pub colours: Option<ColourFeatures>,
}

/// The counts of a window, added up over its blocks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Answers in the window.
    pub answers: u64,
    pub labels: Vec<u64>,
    pub confidence_bins: Vec<u64>,
    /// Answers with a confidence (the total of `confidence_bins`).
    pub with_confidence: u64,
    /// Answers with `known: false`, out of `with_known` that say.
    pub unknown: u64,
    pub with_known: u64,
    /// Sums of each colour statistic over the `with_colours` answers that have them.
    pub colour_sums: ColourFeatures,
    pub with_colours: u64,
}

/// One block's counters: labels, then confidence bins, then the four totals of [`Totals`].
struct Block {
    counts: Box<[AtomicU32]>,
    sums: [AtomicU64; COLOUR_FEATURES],
}

/// Positions of the totals after the labels and bins.
enum Totals {
    Answers,
    Unknown,
    WithKnown,
    WithColours,
}

pub struct Window {
    labels: usize,
    bins: usize,
    step: u64,
    /// Complete blocks in a window.
    blocks: u64,
    ring: Box<[Block]>,
    next: AtomicU64,
}

impl Window {
    /// A window of `blocks` blocks of `step` answers, for `labels` labels and `bins` confidence bins.
    pub fn new(labels: usize, bins: usize, step: u64, blocks: u64) -> Window {
        let step = step.max(1);
        let blocks = blocks.max(1);
        let counters = labels + bins + 4;
        let ring = (0..blocks + 2)
            .map(|_| Block {
                counts: (0..counters).map(|_| AtomicU32::new(0)).collect(),
                sums: std::array::from_fn(|_| AtomicU64::new(0)),
            })
            .collect();
        Window {
            labels,
            bins,
            step,
            blocks,
            ring,
            next: AtomicU64::new(0),
        }
    }

    /// Answers observed since start.
    pub fn observed(&self) -> u64 {
        self.next.load(Relaxed)
    }

    fn slot(&self, block: u64) -> &Block {
        &self.ring[(block % self.ring.len() as u64) as usize]
    }

    /// Count one answer; when it completes a block and a whole window has been seen, the window's
    /// counts (the last `blocks` blocks), with the number of that last block.
    pub fn observe(&self, o: &Observation) -> Option<(u64, Snapshot)> {
        let seq = self.next.fetch_add(1, Relaxed);
        let block = seq / self.step;
        let position = seq % self.step;
        if position == 0 {
            self.clear(self.slot(block + 1));
        }
        let b = self.slot(block);
        let total = |t: Totals| &b.counts[self.labels + self.bins + t as usize];
        if let Some(c) = b.counts.get(o.label.min(self.labels.saturating_sub(1))) {
            c.fetch_add(1, Relaxed);
        }
        if let Some(bin) = o.confidence_bin.filter(|bin| *bin < self.bins) {
            b.counts[self.labels + bin].fetch_add(1, Relaxed);
        }
        if let Some(known) = o.known {
            total(Totals::WithKnown).fetch_add(1, Relaxed);
            if !known {
                total(Totals::Unknown).fetch_add(1, Relaxed);
            }
        }
        if let Some(f) = &o.colours {
            total(Totals::WithColours).fetch_add(1, Relaxed);
            for (sum, v) in b.sums.iter().zip(f) {
                sum.fetch_add((v.clamp(0.0, 1.0) * FIXED) as u64, Relaxed);
            }
        }
        total(Totals::Answers).fetch_add(1, Relaxed);
        (position == self.step - 1 && block + 1 >= self.blocks)
            .then(|| (block, self.snapshot(block)))
    }

    fn clear(&self, b: &Block) {
        for c in &b.counts {
            c.store(0, Relaxed);
        }
        for s in &b.sums {
            s.store(0, Relaxed);
        }
    }

    /// The counts of the `blocks` blocks ending with `last`.
    fn snapshot(&self, last: u64) -> Snapshot {
        let mut s = Snapshot {
            labels: vec![0; self.labels],
            confidence_bins: vec![0; self.bins],
            ..Snapshot::default()
        };
        let mut sums = [0u64; COLOUR_FEATURES];
        for block in last + 1 - self.blocks..=last {
            let b = self.slot(block);
            let count = |i: usize| u64::from(b.counts[i].load(Relaxed));
            for (i, l) in s.labels.iter_mut().enumerate() {
                *l += count(i);
            }
            for (i, c) in s.confidence_bins.iter_mut().enumerate() {
                *c += count(self.labels + i);
            }
            let base = self.labels + self.bins;
            s.answers += count(base + Totals::Answers as usize);
            s.unknown += count(base + Totals::Unknown as usize);
            s.with_known += count(base + Totals::WithKnown as usize);
            s.with_colours += count(base + Totals::WithColours as usize);
            for (sum, v) in sums.iter_mut().zip(&b.sums) {
                *sum = sum.saturating_add(v.load(Relaxed));
            }
        }
        s.with_confidence = s.confidence_bins.iter().sum();
        s.colour_sums = sums.map(|v| v as f64 / FIXED);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(label: usize, bin: usize, known: bool, colour: f64) -> Observation {
        Observation {
            label,
            confidence_bin: Some(bin),
            known: Some(known),
            colours: Some([colour; COLOUR_FEATURES]),
        }
    }

    #[test]
    fn a_window_is_reported_per_block_once_full_and_slides() {
        let w = Window::new(3, 2, 2, 3); // windows of 3 blocks of 2 answers
        let mut reports = Vec::new();
        for i in 0..10u64 {
            let o = answer((i % 3) as usize, (i % 2) as usize, i != 7, 0.25);
            if let Some(r) = w.observe(&o) {
                reports.push((i, r));
            }
        }
        // The first window is complete at the 6th answer, then one per block.
        let at: Vec<u64> = reports.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, [5, 7, 9]);
        let (_, (block, s)) = &reports[2];
        assert_eq!(*block, 4);
        // answers 4..=9
        assert_eq!(s.answers, 6);
        assert_eq!(s.labels, [2, 2, 2]);
        assert_eq!(s.confidence_bins, [3, 3]);
        assert_eq!((s.unknown, s.with_known, s.with_confidence), (1, 6, 6));
        assert_eq!(s.with_colours, 6);
        assert!((s.colour_sums[3] - 1.5).abs() < 1e-9, "{:?}", s.colour_sums);
        assert_eq!(w.observed(), 10);
    }

    #[test]
    fn memory_stays_fixed_and_old_blocks_leave_the_window() {
        let w = Window::new(2, 1, 5, 2);
        let mut last = None;
        for i in 0..100_000u64 {
            let label = usize::from(i >= 99_990);
            if let Some(r) = w.observe(&answer(label, 0, true, 0.5)) {
                last = Some(r.1);
            }
        }
        let s = last.unwrap();
        // the last window: answers 99_990..99_999, all of label 1
        assert_eq!((s.answers, s.labels.clone()), (10, vec![0, 10]));
        assert_eq!(w.ring.len(), 4);
    }

    #[test]
    fn out_of_range_values_are_counted_safely() {
        let w = Window::new(2, 2, 1, 1);
        let o = Observation {
            label: 9,
            confidence_bin: Some(7),
            known: None,
            colours: Some([2.0; COLOUR_FEATURES]),
        };
        let (_, s) = w.observe(&o).unwrap();
        assert_eq!(
            (s.answers, s.labels.clone(), s.with_confidence),
            (1, vec![0, 1], 0)
        );
        assert_eq!(s.colour_sums, [1.0; COLOUR_FEATURES]);
    }
}
