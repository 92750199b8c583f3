//! Pure-Rust rasterisation of filled convex shapes into one-channel images.
//!
//! Images are row-major `&mut [u8]` of `height * width` bytes, row 0 at the top. A pixel belongs
//! to a shape when its centre does (pixel-centre sampling, no anti-aliasing), so the output is
//! exact and reproducible. Shapes are convex, hence every image row meets a shape in one interval
//! of x: each fill computes that interval analytically, row by row over the shape's bounding box,
//! and writes it with `slice::fill`. No per-pixel tests, no work outside the shape's rows.

/// Maps a world rectangle onto an image: world x grows to the right, world y grows up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Viewport {
    x_min: f64,
    y_max: f64,
    /// World units per pixel along x and along y, and their inverses: rows are filled with
    /// multiplications only, as divisions would dominate the cost of a small shape.
    sx: f64,
    sy: f64,
    inv_sx: f64,
    inv_sy: f64,
    width: usize,
    height: usize,
}

/// `{x : lo <= x <= hi}`; empty when `lo > hi` (or a bound is NaN).
#[derive(Clone, Copy, Debug)]
struct Span {
    lo: f64,
    hi: f64,
}

impl Span {
    const ALL: Span = Span { lo: f64::NEG_INFINITY, hi: f64::INFINITY };
    const EMPTY: Span = Span { lo: f64::INFINITY, hi: f64::NEG_INFINITY };

    fn is_empty(self) -> bool {
        self.lo > self.hi || self.lo.is_nan() || self.hi.is_nan()
    }

    fn intersect(self, other: Span) -> Span {
        Span {
            lo: if other.lo > self.lo { other.lo } else { self.lo },
            hi: if other.hi < self.hi { other.hi } else { self.hi },
        }
    }

    /// The smallest span holding both; exact for the pieces of one convex set.
    fn hull(self, other: Span) -> Span {
        if self.is_empty() {
            other
        } else if other.is_empty() {
            self
        } else {
            Span {
                lo: if other.lo < self.lo { other.lo } else { self.lo },
                hi: if other.hi > self.hi { other.hi } else { self.hi },
            }
        }
    }

    /// Points of the row at height `y` within `r` of `(cx, cy)`.
    fn disc(cx: f64, cy: f64, r: f64, y: f64) -> Span {
        let dy = y - cy;
        let h2 = r * r - dy * dy;
        if h2 < 0.0 || h2.is_nan() {
            return Span::EMPTY;
        }
        let h = h2.sqrt();
        Span { lo: cx - h, hi: cx + h }
    }
}

/// The half-plane pair `lo <= k x + c0 + c1 y <= hi`, solved for x once per shape so that each
/// row costs two multiply-adds.
#[derive(Clone, Copy, Debug)]
enum Slab {
    /// `k != 0`: x in `[lo + slope y, hi + slope y]`.
    Lines { lo: f64, hi: f64, slope: f64 },
    /// `k == 0`: the whole row where `lo <= c0 + c1 y <= hi`, else nothing.
    Flat { c0: f64, c1: f64, lo: f64, hi: f64 },
}

impl Slab {
    fn new(k: f64, c0: f64, c1: f64, lo: f64, hi: f64) -> Self {
        let slope = -c1 / k;
        if k > 0.0 {
            Slab::Lines { lo: (lo - c0) / k, hi: (hi - c0) / k, slope }
        } else if k < 0.0 {
            Slab::Lines { lo: (hi - c0) / k, hi: (lo - c0) / k, slope }
        } else {
            Slab::Flat { c0, c1, lo, hi }
        }
    }

    fn at(self, y: f64) -> Span {
        match self {
            Slab::Lines { lo, hi, slope } => Span { lo: lo + slope * y, hi: hi + slope * y },
            Slab::Flat { c0, c1, lo, hi } => {
                let c = c0 + c1 * y;
                if lo <= c && c <= hi {
                    Span::ALL
                } else {
                    Span::EMPTY
                }
            }
        }
    }
}

impl Viewport {
    /// Maps world `[x_min, x_max] x [y_min, y_max]` onto a `width x height` image.
    pub const fn new(x_min: f64, x_max: f64, y_min: f64, y_max: f64, width: usize, height: usize) -> Self {
        let (sx, sy) = ((x_max - x_min) / width as f64, (y_max - y_min) / height as f64);
        Self { x_min, y_max, sx, sy, inv_sx: 1.0 / sx, inv_sy: 1.0 / sy, width, height }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Bytes of one image.
    pub fn numel(&self) -> usize {
        self.width * self.height
    }

    /// The larger side of a pixel in world units. Envs widen thin strokes to at least 0.75 of it:
    /// every point lies within `sqrt(2)/2` pixel of a pixel centre, so such a stroke never falls
    /// between pixel centres and disappears.
    pub fn pixel_size(&self) -> f64 {
        self.sx.max(self.sy)
    }

    /// World coordinates of the centre of pixel (`col`, `row`).
    pub fn pixel_centre(&self, col: usize, row: usize) -> (f64, f64) {
        (self.x_min + (col as f64 + 0.5) * self.sx, self.y_max - (row as f64 + 0.5) * self.sy)
    }

    /// Sets to `value` every pixel whose centre lies within `radius` of the segment `a`-`b`.
    pub fn fill_capsule(&self, img: &mut [u8], a: (f64, f64), b: (f64, f64), radius: f64, value: u8) {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        if len2 == 0.0 {
            // The band below would be unconstrained.
            self.fill_disc(img, a, radius, value);
            return;
        }
        let reach = radius * len2.sqrt();
        // The band along the segment: t = ((p - a) . d) / |d|^2 in [0, 1] and perpendicular
        // distance |(p - a) x d| / |d| <= radius, both linear in x on a row. The capsule is that
        // band plus the end discs, and a convex set's row is the hull of its pieces' rows.
        let along = Slab::new(dx, -a.0 * dx - a.1 * dy, dy, 0.0, len2);
        let across = Slab::new(dy, a.1 * dx - a.0 * dy, -dx, -reach, reach);
        self.fill_rows(img, a.1.min(b.1) - radius, a.1.max(b.1) + radius, value, |y| {
            along
                .at(y)
                .intersect(across.at(y))
                .hull(Span::disc(a.0, a.1, radius, y))
                .hull(Span::disc(b.0, b.1, radius, y))
        });
    }

    /// Sets to `value` every pixel whose centre lies within `radius` of `centre`.
    pub fn fill_disc(&self, img: &mut [u8], centre: (f64, f64), radius: f64, value: u8) {
        self.fill_rows(img, centre.1 - radius, centre.1 + radius, value, |y| Span::disc(centre.0, centre.1, radius, y));
    }

    /// Sets to `value` every pixel whose centre lies in the axis-aligned world rectangle.
    pub fn fill_rect(&self, img: &mut [u8], x0: f64, y0: f64, x1: f64, y1: f64, value: u8) {
        let span = Span { lo: x0.min(x1), hi: x0.max(x1) };
        self.fill_rows(img, y0.min(y1), y0.max(y1), value, |_| span);
    }

    /// Sets to `value` every pixel whose centre lies in the convex polygon with these vertices
    /// (either winding). Non-convex input fills the intersection of the edges' half-planes.
    pub fn fill_convex_polygon<const N: usize>(&self, img: &mut [u8], vertices: &[(f64, f64); N], value: u8) {
        if N < 3 {
            return;
        }
        let edge = |i: usize| (vertices[i], vertices[(i + 1) % N]);
        let twice_area: f64 = (0..N)
            .map(|i| {
                let (p, q) = edge(i);
                p.0 * q.1 - q.0 * p.1
            })
            .sum();
        if twice_area == 0.0 || twice_area.is_nan() {
            return;
        }
        let o = twice_area.signum();
        // Inside means on the interior side of every edge p -> q:
        // o * ((q - p) x (x - p.x, y - p.y)) >= 0, linear in x and y.
        let slabs: [Slab; N] = std::array::from_fn(|i| {
            let (p, q) = edge(i);
            let (ex, ey) = (q.0 - p.0, q.1 - p.1);
            Slab::new(-ey * o, (ey * p.0 - ex * p.1) * o, ex * o, 0.0, f64::INFINITY)
        });
        let y_lo = vertices.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
        let y_hi = vertices.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
        self.fill_rows(img, y_lo, y_hi, value, |y| {
            slabs.iter().fold(Span::ALL, |span, slab| span.intersect(slab.at(y)))
        });
    }

    /// Fills, on each row whose centre has world y in `[y_lo, y_hi]`, the pixels whose centres
    /// lie in `row_span(y)`.
    fn fill_rows(&self, img: &mut [u8], y_lo: f64, y_hi: f64, value: u8, row_span: impl Fn(f64) -> Span) {
        assert_eq!(img.len(), self.numel(), "image buffer does not match the viewport");
        // Row r has centre y = y_max - (r + 0.5) sy.
        let Some(rows) =
            index_range((self.y_max - y_hi) * self.inv_sy - 0.5, (self.y_max - y_lo) * self.inv_sy - 0.5, self.height)
        else {
            return;
        };
        for row in rows {
            let span = row_span(self.y_max - (row as f64 + 0.5) * self.sy);
            // Column c has centre x = x_min + (c + 0.5) sx.
            let lo = (span.lo - self.x_min) * self.inv_sx - 0.5;
            let hi = (span.hi - self.x_min) * self.inv_sx - 0.5;
            if let Some(cols) = index_range(lo, hi, self.width) {
                img[row * self.width..][cols].fill(value);
            }
        }
    }
}

/// The integers in `[lo, hi]` within `0..n`, or `None` when there are none (also for NaN bounds,
/// so degenerate shapes draw nothing instead of panicking).
fn index_range(lo: f64, hi: f64, n: usize) -> Option<std::ops::Range<usize>> {
    let last = n as f64 - 1.0;
    if !(n > 0 && lo <= hi && hi >= 0.0 && lo <= last) {
        return None;
    }
    // Both clamped into [0, n - 1], where truncation is floor: ceil and floor proper are library
    // calls on baseline x86-64, and f64 -> i64 is one instruction where f64 -> usize is several.
    let lo = if lo > 0.0 { lo } else { 0.0 };
    let hi = if hi < last { hi } else { last };
    let first = lo as i64 + i64::from((lo as i64 as f64) < lo);
    let end = hi as i64 + 1;
    (first < end).then_some(first as usize..end as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn view() -> Viewport {
        Viewport::new(-1.32, 1.32, -1.0, 1.64, 60, 50)
    }

    /// Brute force: every pixel whose centre satisfies `inside`.
    fn reference(v: &Viewport, inside: impl Fn(f64, f64) -> bool) -> Vec<u8> {
        let mut img = vec![0u8; v.numel()];
        for row in 0..v.height() {
            for col in 0..v.width() {
                let (x, y) = v.pixel_centre(col, row);
                if inside(x, y) {
                    img[row * v.width() + col] = 1;
                }
            }
        }
        img
    }

    fn dist_to_segment(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        let t = if len2 == 0.0 { 0.0 } else { (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0) };
        ((p.0 - a.0 - t * dx).powi(2) + (p.1 - a.1 - t * dy).powi(2)).sqrt()
    }

    fn random_point(rng: &mut StdRng) -> (f64, f64) {
        // Partly outside the image, to exercise clipping.
        (rng.gen_range(-1.8..1.8), rng.gen_range(-1.5..2.1))
    }

    #[test]
    fn capsule_pixels_equal_brute_force_distance_test() {
        let v = view();
        let mut rng = StdRng::seed_from_u64(1);
        for i in 0..2000 {
            let a = random_point(&mut rng);
            let b = match i % 4 {
                // Axis-aligned and degenerate segments hit the k == 0 branches.
                0 => (a.0, rng.gen_range(-1.5..2.1)),
                1 => (rng.gen_range(-1.8..1.8), a.1),
                2 if i % 8 == 2 => a,
                _ => random_point(&mut rng),
            };
            let r = rng.gen_range(0.0..0.5);
            let mut img = vec![0u8; v.numel()];
            v.fill_capsule(&mut img, a, b, r, 1);
            assert_eq!(img, reference(&v, |x, y| dist_to_segment((x, y), a, b) <= r), "capsule {a:?} {b:?} r={r}");
        }
    }

    #[test]
    fn disc_pixels_equal_brute_force_distance_test() {
        let v = view();
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..2000 {
            let c = random_point(&mut rng);
            let r = rng.gen_range(0.0..0.8);
            let mut img = vec![0u8; v.numel()];
            v.fill_disc(&mut img, c, r, 1);
            let want = reference(&v, |x, y| {
                let (dx, dy) = (x - c.0, y - c.1);
                dx * dx + dy * dy <= r * r
            });
            assert_eq!(img, want, "disc {c:?} r={r}");
        }
    }

    #[test]
    fn rotated_rectangle_pixels_equal_brute_force_test() {
        let v = view();
        let mut rng = StdRng::seed_from_u64(3);
        for i in 0..1000 {
            let c = random_point(&mut rng);
            let (hw, hh) = (rng.gen_range(0.01..0.6), rng.gen_range(0.01..0.6));
            let angle: f64 = rng.gen_range(-3.2..3.2);
            let (s, co) = angle.sin_cos();
            let corner = |u: f64, w: f64| (c.0 + u * co - w * s, c.1 + u * s + w * co);
            let mut quad = [corner(-hw, -hh), corner(hw, -hh), corner(hw, hh), corner(-hw, hh)];
            if i % 2 == 0 {
                quad.reverse();
            }
            let mut img = vec![0u8; v.numel()];
            v.fill_convex_polygon(&mut img, &quad, 1);
            // Pixels within 1e-9 of an edge may go either way through rounding; compare the rest.
            let inside = |x: f64, y: f64, eps: f64| {
                let (dx, dy) = (x - c.0, y - c.1);
                let (u, w) = (dx * co + dy * s, -dx * s + dy * co);
                u.abs() <= hw + eps && w.abs() <= hh + eps
            };
            let (outer, inner) = (reference(&v, |x, y| inside(x, y, 1e-9)), reference(&v, |x, y| inside(x, y, -1e-9)));
            for k in 0..img.len() {
                assert!(inner[k] <= img[k] && img[k] <= outer[k], "rectangle {i}, pixel {k}");
            }
        }
    }

    #[test]
    fn axis_aligned_rect_fills_exactly_the_covered_centres() {
        // 10 x 10 pixels of size 1 with centres at 0.5, 1.5, ...
        let v = Viewport::new(0.0, 10.0, 0.0, 10.0, 10, 10);
        let mut img = vec![0u8; 100];
        v.fill_rect(&mut img, 2.2, 7.9, 4.5, 5.6, 9);
        // Columns with centres in [2.2, 4.5]: 2, 3 (4.5 is column 4's centre, included);
        // rows with centre y in [5.6, 7.9]: y = 6.5, 7.5 -> rows 3, 2.
        let lit: Vec<(usize, usize)> = (0..100).filter(|&k| img[k] == 9).map(|k| (k / 10, k % 10)).collect();
        assert_eq!(lit, vec![(2, 2), (2, 3), (2, 4), (3, 2), (3, 3), (3, 4)]);
    }

    #[test]
    fn shapes_outside_the_image_or_degenerate_draw_nothing() {
        let v = view();
        let mut img = vec![0u8; v.numel()];
        v.fill_capsule(&mut img, (5.0, 5.0), (6.0, 7.0), 0.3, 1);
        v.fill_disc(&mut img, (-9.0, 0.0), 1.0, 1);
        v.fill_disc(&mut img, (0.0, 0.0), f64::NAN, 1);
        v.fill_convex_polygon(&mut img, &[(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)], 1);
        v.fill_rect(&mut img, 0.0, 3.0, 1.0, 4.0, 1);
        assert!(img.iter().all(|&p| p == 0));
    }
}
