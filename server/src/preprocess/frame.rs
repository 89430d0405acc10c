//! Resize mode `content_square`: the picture cut to the square around the body before the resize,
//! so that a body photographed small, off centre or in a wide frame reaches the network at the
//! size and place it was trained on. Integer arithmetic only, step for step as the training code's
//! `content_box` and `content_square` (`model/celestial/preprocess.py`), so both cut the same
//! pixels. A leaf module.

/// A square window on a picture; it may reach past the picture's edges (black there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Square {
    pub left: i64,
    pub top: i64,
    pub side: u32,
}

/// The longest side [`BodySearch::square`] can give a `w` x `h` picture: a box of the whole picture
/// widened by a tenth (for the memory estimates).
pub fn max_side(w: u32, h: u32) -> u32 {
    let s = w.max(h);
    s.saturating_add(s.div_ceil(10))
}

/// Finds the square around the body of a picture, reusing its buffers from one picture to the next
/// (each worker's preprocessor owns one).
#[derive(Debug, Default)]
pub struct BodySearch {
    /// Each pixel's brightest channel.
    levels: Vec<u8>,
    /// How many pixels of each row and of each column reach the threshold.
    rows: Vec<u32>,
    cols: Vec<u32>,
}

impl BodySearch {
    /// The square the body's box ([`BodySearch::content_box`]) is widened to: a tenth of the
    /// box's longer side more (the training renders leave about that much sky), at least a quarter
    /// of the picture's shorter side (a star is not zoomed into), centred on the box. `None`: use
    /// the whole picture.
    pub fn square(&mut self, rgb: &[u8], w: u32, h: u32) -> Option<Square> {
        let (x0, y0, x1, y1) = self.content_box(rgb, w, h)?;
        let side = (x1 - x0).max(y1 - y0);
        let side = (side + side.div_ceil(10)).max(w.min(h) / 4);
        // Floor division, as Python's `//` (the sums may be smaller than the side).
        let left = (i64::from(x0) + i64::from(x1) - i64::from(side)).div_euclid(2);
        let top = (i64::from(y0) + i64::from(y1) - i64::from(side)).div_euclid(2);
        Some(Square { left, top, side })
    }

    /// The rows and columns of an interleaved RGB8 picture that hold the body, as
    /// `(left, top, right, bottom)` (right and bottom exclusive): those with at least
    /// `max(2, side / 16)` pixels whose brightest channel reaches a threshold a quarter of the way
    /// from the picture's dark level (its 10th percentile) to its bright one (99th), and at least
    /// 16. `None` when no row or no column does (a picture darker than 16 nearly everywhere).
    fn content_box(&mut self, rgb: &[u8], w: u32, h: u32) -> Option<(u32, u32, u32, u32)> {
        let (wu, hu) = (w as usize, h as usize);
        let n = wu * hu;
        if n == 0 || rgb.len() < 3 * n {
            return None;
        }
        self.levels.clear();
        let levels = rgb[..3 * n]
            .chunks_exact(3)
            .map(|p| p[0].max(p[1]).max(p[2]));
        self.levels.extend(levels);
        let mut hist = [0usize; 256];
        for &v in &self.levels {
            hist[usize::from(v)] += 1;
        }
        // The value of the k-th smallest level (0-based), as numpy's searchsorted on the cumulative
        // counts finds it.
        let rank = |k: usize| {
            let mut seen = 0;
            hist.iter()
                .position(|&c| {
                    seen += c;
                    seen > k
                })
                .unwrap_or(255) as u8
        };
        let (lo, hi) = (rank(n / 10), rank(n - 1 - n / 100));
        let threshold = (lo + hi.saturating_sub(lo).div_ceil(4)).max(16);
        self.rows.clear();
        self.rows.resize(hu, 0);
        self.cols.clear();
        self.cols.resize(wu, 0);
        for (count, row) in self.rows.iter_mut().zip(self.levels.chunks_exact(wu)) {
            for (col, &v) in self.cols.iter_mut().zip(row) {
                let bright = u32::from(v >= threshold);
                *count += bright;
                *col += bright;
            }
        }
        let span = |counts: &[u32], need: u32| {
            let first = counts.iter().position(|&c| c >= need)?;
            let last = counts.iter().rposition(|&c| c >= need)?;
            Some((first as u32, last as u32 + 1))
        };
        let (top, bottom) = span(&self.rows, (w / 16).max(2))?;
        let (left, right) = span(&self.cols, (h / 16).max(2))?;
        Some((left, top, right, bottom))
    }

    /// Let go of the buffers a large picture grew, keeping at most `keep` bytes each.
    pub fn trim(&mut self, keep: usize) {
        if self.levels.capacity() > keep {
            self.levels = Vec::new();
        }
        if (self.rows.capacity() + self.cols.capacity()) * size_of::<u32>() > keep {
            (self.rows, self.cols) = (Vec::new(), Vec::new());
        }
    }
}

/// Copy `square` of an interleaved `w` x `h` picture of `channels` bytes per pixel into `out`
/// (`side` x `side`), black where the square reaches past the picture.
pub fn crop(src: &[u8], (w, h): (u32, u32), channels: usize, sq: Square, out: &mut Vec<u8>) {
    let side = sq.side as usize;
    let row_bytes = side * channels;
    out.clear();
    out.resize(row_bytes * side, 0);
    // The columns of the square that lie on the picture.
    let x_from = sq.left.max(0);
    let x_to = (sq.left + i64::from(sq.side)).min(i64::from(w));
    if x_from >= x_to {
        return;
    }
    let (dst_x, n) = ((x_from - sq.left) as usize, (x_to - x_from) as usize);
    for (dy, dst) in out.chunks_exact_mut(row_bytes).enumerate() {
        let y = sq.top + dy as i64;
        if y < 0 || y >= i64::from(h) {
            continue;
        }
        let start = (y as usize * w as usize + x_from as usize) * channels;
        dst[dst_x * channels..(dst_x + n) * channels]
            .copy_from_slice(&src[start..start + n * channels]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_box(rgb: &[u8], w: u32, h: u32) -> Option<(u32, u32, u32, u32)> {
        BodySearch::default().content_box(rgb, w, h)
    }

    fn content_square(rgb: &[u8], w: u32, h: u32) -> Option<Square> {
        BodySearch::default().square(rgb, w, h)
    }

    /// A `w` x `h` black picture with a grey `bw` x `bh` rectangle at (x, y).
    fn picture(w: u32, h: u32, (x, y, bw, bh): (u32, u32, u32, u32)) -> Vec<u8> {
        let mut px = vec![0u8; (w * h * 3) as usize];
        for yy in y..y + bh {
            for xx in x..x + bw {
                let i = ((yy * w + xx) * 3) as usize;
                px[i..i + 3].copy_from_slice(&[120, 110, 100]);
            }
        }
        px
    }

    #[test]
    fn a_small_body_gets_a_square_a_tenth_wider_around_it() {
        let px = picture(32, 32, (4, 6, 10, 12));
        assert_eq!(content_box(&px, 32, 32), Some((4, 6, 14, 18)));
        // side 12 + 2 = 14, centred on (9, 12): left (4 + 14 - 14) / 2 = 2, top (6 + 18 - 14) / 2 = 5
        let sq = content_square(&px, 32, 32).unwrap();
        assert_eq!(
            sq,
            Square {
                left: 2,
                top: 5,
                side: 14
            }
        );
    }

    #[test]
    fn a_body_at_the_edge_reaches_past_it_in_black() {
        let px = picture(32, 32, (0, 0, 20, 20));
        let sq = content_square(&px, 32, 32).unwrap();
        assert_eq!(sq.side, 22);
        assert_eq!((sq.left, sq.top), (-1, -1));
        let mut out = Vec::new();
        crop(&px, (32, 32), 3, sq, &mut out);
        assert_eq!(out.len(), 22 * 22 * 3);
        assert_eq!(
            &out[..3],
            &[0, 0, 0],
            "the corner outside the picture is black"
        );
        let inside = (22 + 1) * 3;
        assert_eq!(&out[inside..inside + 3], &[120, 110, 100]);
    }

    #[test]
    fn a_dark_picture_is_left_whole_and_a_flat_one_framed_whole() {
        assert_eq!(content_square(&vec![0; 32 * 32 * 3], 32, 32), None);
        assert_eq!(
            content_square(&vec![200; 16 * 16 * 3], 16, 16).map(|s| s.side),
            Some(18)
        );
        assert_eq!(content_square(&[], 0, 0), None);
    }

    #[test]
    fn a_star_is_not_zoomed_into() {
        // 5 pixels a row reach 64 / 16: a square of at least a quarter of the picture
        let px = picture(64, 64, (30, 30, 5, 5));
        assert_eq!(content_square(&px, 64, 64).unwrap().side, 16);
        // 3 do not: no body, the whole picture
        assert_eq!(
            content_square(&picture(64, 64, (30, 30, 3, 3)), 64, 64),
            None
        );
    }

    #[test]
    fn a_square_off_the_picture_is_black() {
        let px = picture(8, 8, (0, 0, 8, 8));
        let mut out = vec![1; 5];
        let far = Square {
            left: 100,
            top: 0,
            side: 4,
        };
        crop(&px, (8, 8), 3, far, &mut out);
        assert!(out.len() == 48 && out.iter().all(|&v| v == 0));
    }

    #[test]
    fn one_search_serves_pictures_of_any_size_in_turn() {
        let pictures = [
            (picture(64, 40, (30, 5, 20, 30)), 64, 40),
            (picture(32, 32, (4, 6, 10, 12)), 32, 32),
            (vec![0; 16 * 16 * 3], 16, 16),
            (picture(20, 50, (0, 10, 20, 20)), 20, 50),
        ];
        let mut search = BodySearch::default();
        for (px, w, h) in &pictures {
            assert_eq!(search.square(px, *w, *h), content_square(px, *w, *h));
        }
    }

    #[test]
    fn max_side_bounds_every_square() {
        for (w, h) in [(1, 1), (32, 32), (33, 20), (1000, 3)] {
            let px = vec![255u8; (w * h * 3) as usize];
            let side = content_square(&px, w, h).map_or(0, |s| s.side);
            assert!(side <= max_side(w, h), "{w}x{h}: {side}");
        }
    }
}
