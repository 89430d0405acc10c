//! The antialiased triangle-filter resize, bit-identical to image-rs's
//! `imageops::resize(.., FilterType::Triangle)`: [`TriangleResizer`] for a whole decoded image (both
//! passes over contiguous memory, vectorised) and [`StreamResizer`] for an image that arrives row by
//! row and is never held whole (memory independent of its height). A leaf module.

/// One axis of a triangle-filter resize: per output index the first source index and its
/// normalised weights (stored flat), computed exactly as image-rs computes them.
#[derive(Debug, Clone, PartialEq)]
struct AxisPlan {
    src: u32,
    dst: u32,
    /// Per output index: (first source index, offset into `weights`, number of taps).
    taps: Vec<(usize, usize, usize)>,
    weights: Vec<f32>,
}

impl AxisPlan {
    fn new(src: u32, dst: u32) -> AxisPlan {
        let ratio = src as f32 / dst as f32;
        let sratio = if ratio < 1.0 { 1.0 } else { ratio };
        let support = sratio;
        let mut taps = Vec::with_capacity(dst as usize);
        let mut weights = Vec::new();
        for o in 0..dst {
            let input = (o as f32 + 0.5) * ratio;
            let left = ((input - support).floor() as i64).clamp(0, i64::from(src) - 1);
            let right = ((input + support).ceil() as i64).clamp(left + 1, i64::from(src));
            let input = input - 0.5;
            let offset = weights.len();
            let mut sum = 0f32;
            for i in left..right {
                let x = (i as f32 - input) / sratio;
                let wt = if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 };
                weights.push(wt);
                sum += wt;
            }
            for wt in &mut weights[offset..] {
                *wt /= sum;
            }
            taps.push((left as usize, offset, (right - left) as usize));
        }
        AxisPlan {
            src,
            dst,
            taps,
            weights,
        }
    }

    #[inline]
    fn get(&self, o: usize) -> (usize, &[f32]) {
        let (first, offset, n) = self.taps[o];
        (first, &self.weights[offset..offset + n])
    }
}

/// `t.clamp(0, 255).round() as u8` (round half away from zero) without a libm call, branch-free so
/// that it vectorises: for non-negative `t` below 256, `t - floor(t)` is exact in f32.
#[inline(always)]
fn round_u8(t: f32) -> u8 {
    #[allow(clippy::manual_clamp)]
    // clamp would keep a NaN; max/min return the number, which the unchecked cast needs
    let t = t.max(0.0).min(255.0);
    // SAFETY: `t` is a number within 0..=255 here, so it fits an i32.
    let i = unsafe { t.to_int_unchecked::<i32>() };
    (i + i32::from(t - i as f32 >= 0.5)) as u8
}

/// Reusable state of the triangle resize: the two axis plans (kept while the source size repeats)
/// and the f32 scratch planes.
#[derive(Debug, Default)]
pub struct TriangleResizer {
    plans: Option<(AxisPlan, AxisPlan)>,
    /// One output row of the vertical pass.
    pub(super) acc: Vec<f32>,
    /// Vertical pass output, transposed: per source column, its `nh * channels` values.
    pub(super) cols_t: Vec<f32>,
    /// Horizontal pass output, transposed: per output column, its `nh * channels` values.
    out_t: Vec<f32>,
    /// `out_t` rounded to 8 bits.
    out_t8: Vec<u8>,
}

impl TriangleResizer {
    /// Let go of scratch planes over `keep` bytes and of weights over 1 MiB (a very tall or wide
    /// image's), so that a worker does not keep them until the next image.
    pub fn trim(&mut self, keep: usize) {
        fn cap(v: &mut Vec<f32>, keep: usize) {
            if v.capacity() * size_of::<f32>() > keep {
                *v = Vec::new();
            }
        }
        cap(&mut self.acc, keep);
        cap(&mut self.cols_t, keep);
        let weights = |p: &AxisPlan| p.weights.capacity() * 4 + p.taps.capacity() * 24;
        if matches!(&self.plans, Some((c, r)) if weights(c) + weights(r) > 1 << 20) {
            self.plans = None;
        }
    }

    /// Most bytes one [`TriangleResizer::resize`] of a `w` x `h` image to `nw` x `nh` allocates:
    /// the plans and the scratch planes (the output included).
    pub fn bytes_needed((w, h): (u32, u32), channels: usize, (nw, nh): (u32, u32)) -> u64 {
        let (w, h, nw, nh, ch) = (
            u64::from(w),
            u64::from(h),
            u64::from(nw),
            u64::from(nh),
            channels as u64,
        );
        plan_bytes(w, nw) + plan_bytes(h, nh) + 4 * ch * (w + w * nh + nw * nh) + 2 * ch * nw * nh
    }

    /// Antialiased triangle-filter resize of interleaved 8-bit pixels into `out`, bit-identical to
    /// image-rs's `imageops::resize(.., FilterType::Triangle)`: same weights and the same f32
    /// operations in the same order for every output value (vertical pass into f32, then horizontal
    /// pass, clamp, round). Faster because the weights are computed once per size and both passes
    /// run over contiguous memory (the vertical pass stores its rows transposed, so the horizontal
    /// pass is the same row-combining loop), which the compiler vectorises (AVX2 where available).
    pub fn resize(
        &mut self,
        src: &[u8],
        (w, h): (u32, u32),
        channels: usize,
        (nw, nh): (u32, u32),
        out: &mut Vec<u8>,
    ) {
        debug_assert_eq!(src.len(), w as usize * h as usize * channels);
        out.clear();
        if (w, h) == (nw, nh) || w == 0 || h == 0 {
            if (w, h) == (nw, nh) {
                out.extend_from_slice(src);
            } else {
                out.resize(nw as usize * nh as usize * channels, 0);
            }
            return;
        }
        let fresh = !matches!(&self.plans, Some((cols, rows)) if (cols.src, cols.dst, rows.src, rows.dst) == (w, nw, h, nh));
        if fresh {
            self.plans = Some((AxisPlan::new(w, nw), AxisPlan::new(h, nh)));
        }
        let Some((cols, rows)) = &self.plans else {
            unreachable!("set above")
        };
        let column = nh as usize * channels;
        // Every value of the scratch planes is written before it is read: no clearing needed.
        let scratch = |v: &mut Vec<f32>, len: usize| v.resize(len, 0.0);
        scratch(&mut self.acc, w as usize * channels);
        scratch(&mut self.cols_t, w as usize * column);
        scratch(&mut self.out_t, nw as usize * column);
        self.out_t8.resize(nw as usize * column, 0);
        out.resize(nw as usize * column, 0);
        let bufs = Passes {
            src,
            rows,
            cols,
            acc: &mut self.acc,
            cols_t: &mut self.cols_t,
            out_t: &mut self.out_t,
            out_t8: &mut self.out_t8,
            out,
        };
        match channels {
            1 => bufs.dispatch::<1>(),
            3 => bufs.dispatch::<3>(),
            4 => bufs.dispatch::<4>(),
            n => unreachable!("{n} channels"),
        }
    }
}

/// The buffers of one resize.
struct Passes<'a> {
    src: &'a [u8],
    rows: &'a AxisPlan,
    cols: &'a AxisPlan,
    acc: &'a mut [f32],
    cols_t: &'a mut [f32],
    out_t: &'a mut [f32],
    out_t8: &'a mut [u8],
    out: &'a mut [u8],
}

impl Passes<'_> {
    fn dispatch<const CH: usize>(self) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.run_avx2::<CH>() };
        }
        self.run::<CH>();
    }

    /// [`Passes::run`] compiled for AVX2 (without FMA, so every product and sum is rounded exactly
    /// as in the portable build).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2<const CH: usize>(self) {
        self.run::<CH>();
    }

    #[inline(always)]
    fn run<const CH: usize>(self) {
        let Passes {
            src,
            rows,
            cols,
            acc,
            cols_t,
            out_t,
            out_t8,
            out,
        } = self;
        let (nh, nw) = (rows.dst as usize, cols.dst as usize);
        let stride = acc.len();
        let column = nh * CH;
        // Vertical pass: one output row at a time over contiguous source rows, stored transposed.
        for oy in 0..nh {
            let (top, ws) = rows.get(oy);
            combine(
                |k| &src[(top + k) * stride..(top + k + 1) * stride],
                ws,
                acc,
            );
            for (col, px) in cols_t.chunks_exact_mut(column).zip(acc.chunks_exact(CH)) {
                let px: &[f32; CH] = px.try_into().unwrap_or_else(|_| unreachable!());
                col[oy * CH..(oy + 1) * CH].copy_from_slice(px);
            }
        }
        // Horizontal pass: the same combination over the transposed columns.
        for (ox, dst) in out_t.chunks_exact_mut(column).enumerate() {
            let (left, ws) = cols.get(ox);
            combine(
                |k| &cols_t[(left + k) * column..(left + k + 1) * column],
                ws,
                dst,
            );
        }
        // Clamp and round (contiguous, vectorised), then transpose back to interleaved rows.
        for (o, v) in out_t8.iter_mut().zip(out_t.iter()) {
            *o = round_u8(*v);
        }
        for (ox, col) in out_t8.chunks_exact(column).enumerate() {
            for (oy, px) in col.chunks_exact(CH).enumerate() {
                let at = (oy * nw + ox) * CH;
                out[at..at + CH].copy_from_slice(px);
            }
        }
    }
}

/// `out[j] = sum over k of line(k)[j] * ws[k]`, accumulated from 0 in tap order (image-rs's order).
/// The usual tap counts get a loop that keeps the sum in a register across the taps.
#[inline(always)]
fn combine<'a, T: Copy + 'a>(line: impl Fn(usize) -> &'a [T], ws: &[f32], out: &mut [f32])
where
    f32: From<T>,
{
    #[inline(always)]
    fn taps<'a, T: Copy + 'a, const N: usize>(
        line: impl Fn(usize) -> &'a [T],
        ws: &[f32],
        out: &mut [f32],
    ) where
        f32: From<T>,
    {
        let lines: [&[T]; N] = std::array::from_fn(|k| &line(k)[..out.len()]);
        let ws: [f32; N] = std::array::from_fn(|k| ws[k]);
        for (j, o) in out.iter_mut().enumerate() {
            let mut t = 0f32;
            for k in 0..N {
                t += f32::from(lines[k][j]) * ws[k];
            }
            *o = t;
        }
    }
    match ws.len() {
        1 => taps::<T, 1>(line, ws, out),
        2 => taps::<T, 2>(line, ws, out),
        3 => taps::<T, 3>(line, ws, out),
        4 => taps::<T, 4>(line, ws, out),
        5 => taps::<T, 5>(line, ws, out),
        6 => taps::<T, 6>(line, ws, out),
        _ => {
            out.fill(0.0);
            for (k, wk) in ws.iter().enumerate() {
                for (o, v) in out.iter_mut().zip(line(k)) {
                    *o += f32::from(*v) * wk;
                }
            }
        }
    }
}

/// Antialiased triangle-filter resize of interleaved 8-bit pixels (1, 3 or 4 channels),
/// bit-identical to image-rs's `imageops::resize(.., FilterType::Triangle)`.
pub fn resize_triangle(
    src: &[u8],
    width: u32,
    height: u32,
    channels: usize,
    new_width: u32,
    new_height: u32,
) -> Vec<u8> {
    let mut out = Vec::new();
    TriangleResizer::default().resize(
        src,
        (width, height),
        channels,
        (new_width, new_height),
        &mut out,
    );
    out
}

/// Bytes of an [`AxisPlan`] from `src` to `dst` values: per output value a tap entry and at most
/// `2 * support + 2` weights.
fn plan_bytes(src: u64, dst: u64) -> u64 {
    let dst = dst.max(1);
    let support = src.div_ceil(dst).max(1);
    dst * (24 + 4 * (2 * support + 2))
}

/// Most output rows whose taps contain one source row, when `src` rows are resized to `dst`: the
/// rows a [`StreamResizer`] accumulates at once. Output row `o` takes source rows within
/// `support + 1` of its centre `(o + 0.5) * ratio`, and centres are `ratio` apart.
fn open_rows(src: u64, dst: u64) -> u64 {
    let ratio = src as f64 / dst.max(1) as f64;
    let support = ratio.max(1.0);
    ((2.0 * (support + 1.0) / ratio).floor() as u64 + 2).min(dst)
}

/// Triangle resize of an image that arrives one row at a time, top to bottom, bit-identical to
/// [`TriangleResizer`] (and so to image-rs): each source row is added, weighted, into the vertical
/// sums of the few output rows whose taps contain it (in tap order, from 0, as image-rs sums), and
/// an output row whose last tap arrived is resized horizontally at once. Memory: a few rows of the
/// source width, independent of the source height ([`StreamResizer::bytes_needed`]).
#[derive(Debug, Default)]
pub struct StreamResizer {
    plans: Option<(AxisPlan, AxisPlan)>,
    channels: usize,
    /// Accumulators of the open output rows, a ring of `slots` rows of `width * channels` sums.
    acc: Vec<f32>,
    slots: usize,
    /// Source rows received so far.
    received: usize,
    /// First output row not yet finished.
    first_open: usize,
    /// The finished output, `nw * nh * channels` values.
    out: Vec<u8>,
}

impl StreamResizer {
    /// Most bytes a [`StreamResizer`] from `w` x `h` to `nw` x `nh` allocates.
    pub fn bytes_needed((w, h): (u32, u32), channels: usize, (nw, nh): (u32, u32)) -> u64 {
        let (w, h, nw, nh, ch) = (
            u64::from(w),
            u64::from(h),
            u64::from(nw),
            u64::from(nh),
            channels as u64,
        );
        plan_bytes(w, nw) + plan_bytes(h, nh) + 4 * ch * w * open_rows(h, nh) + ch * nw * nh
    }

    /// Get ready for a `w` x `h` source with `channels` channels, resized to `nw` x `nh`.
    pub fn start(&mut self, (w, h): (u32, u32), channels: usize, (nw, nh): (u32, u32)) {
        let rows = AxisPlan::new(h, nh);
        // The exact number of output rows open at once (at most `open_rows`).
        let mut slots = 1;
        let mut first = 0;
        for (o, &(top, _, _)) in rows.taps.iter().enumerate() {
            while rows.taps[first].0 + rows.taps[first].2 <= top {
                first += 1;
            }
            slots = slots.max(o + 1 - first);
        }
        self.acc = vec![0.0; slots * w as usize * channels];
        self.plans = Some((AxisPlan::new(w, nw), rows));
        self.channels = channels;
        self.slots = slots;
        self.received = 0;
        self.first_open = 0;
        self.out.clear();
        self.out.resize(nw as usize * nh as usize * channels, 0);
    }

    /// Add the next source row (`w * channels` values).
    pub fn push(&mut self, row: &[u8]) {
        let Some((cols, rows)) = &self.plans else {
            return;
        };
        let y = self.received;
        self.received += 1;
        let stride = row.len();
        for o in self.first_open..rows.dst as usize {
            let (top, ws) = rows.get(o);
            if top > y {
                break;
            }
            let Some(&w) = ws.get(y - top) else { continue };
            let sums = &mut self.acc[(o % self.slots) * stride..][..stride];
            if y == top {
                sums.fill(0.0);
            }
            for (s, v) in sums.iter_mut().zip(row) {
                *s += f32::from(*v) * w;
            }
            if y + 1 == top + ws.len() {
                let at = o * cols.dst as usize * self.channels;
                let out = &mut self.out[at..at + cols.dst as usize * self.channels];
                horizontal(sums, cols, self.channels, out);
            }
        }
        while self.first_open < rows.dst as usize && {
            let (top, ws) = rows.get(self.first_open);
            top + ws.len() <= self.received
        } {
            self.first_open += 1;
        }
    }

    /// The resized image, once every source row arrived; `None` before.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let (_, rows) = self.plans.take()?;
        self.acc = Vec::new();
        (self.received == rows.src as usize).then(|| std::mem::take(&mut self.out))
    }
}

/// One output row of the horizontal pass: `out[x]` is the weighted sum of the vertical sums under
/// its taps (from 0, in tap order), clamped and rounded.
fn horizontal(sums: &[f32], cols: &AxisPlan, channels: usize, out: &mut [u8]) {
    for (x, px) in out.chunks_exact_mut(channels).enumerate() {
        let (left, ws) = cols.get(x);
        for (c, o) in px.iter_mut().enumerate() {
            let mut t = 0f32;
            for (k, w) in ws.iter().enumerate() {
                t += sums[(left + k) * channels + c] * w;
            }
            *o = round_u8(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, mut seed: u32) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed >> 24) as u8
            })
            .collect()
    }

    fn streamed(src: &[u8], (w, h): (u32, u32), ch: usize, dst: (u32, u32)) -> Option<Vec<u8>> {
        let mut s = StreamResizer::default();
        s.start((w, h), ch, dst);
        for row in src.chunks_exact(w as usize * ch) {
            s.push(row);
        }
        s.finish()
    }

    #[test]
    fn row_by_row_is_bit_identical_to_the_whole_image_resize() {
        for (w, h, nw, nh) in [
            (128, 128, 64, 64),
            (640, 480, 64, 64),
            (100, 37, 64, 64),
            (3, 5, 64, 64),
            (1, 1, 64, 64),
            (64, 64, 64, 64),
            (200, 1, 32, 32),
            (1, 300, 32, 32),
            (1000, 999, 64, 32),
            (70, 65, 64, 64),
        ] {
            for ch in [1, 3] {
                let src = noise((w * h) as usize * ch, w * 31 + h);
                let whole = resize_triangle(&src, w, h, ch, nw, nh);
                assert_eq!(
                    streamed(&src, (w, h), ch, (nw, nh)).as_deref(),
                    Some(&whole[..]),
                    "{w}x{h}x{ch} -> {nw}x{nh}"
                );
            }
        }
    }

    #[test]
    fn memory_is_a_few_rows_and_the_estimate_bounds_it() {
        for (h, nh) in [
            (5000, 64),
            (64, 64),
            (65, 64),
            (3, 64),
            (1, 64),
            (100_000, 7),
        ] {
            let mut s = StreamResizer::default();
            s.start((10, h), 3, (64, nh));
            assert!(
                s.slots as u64 <= open_rows(u64::from(h), u64::from(nh)),
                "{h} -> {nh}: {} slots",
                s.slots
            );
            if h >= 2 * nh {
                assert!(s.slots <= 4, "{h} -> {nh}: {} slots", s.slots);
            }
        }
        // A tall image costs no more than a short one of the same width.
        let tall = StreamResizer::bytes_needed((8000, 40_000), 3, (64, 64));
        let short = StreamResizer::bytes_needed((8000, 500), 3, (64, 64));
        assert!(tall < short + (1 << 20), "{tall} vs {short}");
        assert!(short < 8000 * 3 * 4 * 5 + (1 << 20), "{short}");
    }

    #[test]
    fn missing_rows_give_no_result() {
        let mut s = StreamResizer::default();
        s.start((4, 4), 1, (2, 2));
        s.push(&[1, 2, 3, 4]);
        assert_eq!(s.finish(), None);
    }
}
