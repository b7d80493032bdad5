//! The built-in synthetic two-domain re-ID benchmark (`unreid synth`, the default data of `demo` and the tests).
//!
//! Two domains ("source" and "target"), each written in the Market-1501 layout with Market-style names, so the
//! ordinary Market loader reads them. Identities are procedurally drawn pedestrians (body proportions, skin and
//! hair, clothing colours and patterns on torso and legs, sleeves, shorts/skirts, hats, backpacks, shoulder bags);
//! each camera has its own viewpoint bias, scale, crop offset, illumination, colour cast, blur, background and
//! noise; and the domains differ systematically:
//!
//! | | source ("sunny street") | target ("dim mall") |
//! |---|---|---|
//! | clothing palette | saturated primaries | muted, darker tones |
//! | lighting | bright, mild neutral casts | dim, warm casts, lower saturation |
//! | background | grey pavement, pale walls | brown/green, stronger texture and clutter |
//! | resolution | rendered at full size | rendered at half size and upsampled, blurrier, noisier |
//! | people | fill most of the frame | smaller, with more background |
//!
//! Everything is drawn from generators keyed by (seed, domain, what, index), so the output is byte-identical for
//! a seed regardless of thread count, and JPEGs come from the `image` crate's deterministic encoder.
//!
//! Default size: 128 x 64 pixels (Market-1501's native crop size, large enough for stripes, logos and bag straps
//! to be visible, small enough for a CPU demo), 128 identities per domain (64 train, 64 test), 8-12 images per
//! identity over 6 cameras: about 1,300 images per domain, generated in seconds.

use super::transforms::{resize, Interpolation};
use crate::random::Rng;
use image::RgbImage;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

type Rgb = [f32; 3];

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    /// Identities per domain (half train, half test).
    pub ids: usize,
    pub cameras: usize,
    pub height: usize,
    pub width: usize,
    /// Images per identity, drawn uniformly in this inclusive range.
    pub images_per_id: (usize, usize),
    pub jpeg_quality: u8,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            ids: 128,
            cameras: 6,
            height: 128,
            width: 64,
            images_per_id: (8, 12),
            jpeg_quality: 92,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("synth: {0}")]
    Config(String),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        /// Kept out of `source()` on purpose: the message already includes it, and a chained
        /// report (`{:#}`) would print it twice.
        error: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Exists { path: PathBuf, reason: String },
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
    #[error(transparent)]
    Output(#[from] crate::io::IoError),
}

impl SynthConfig {
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: &str| Err(SynthError::Config(m.to_string()));
        if self.ids < 4 {
            return bad("--ids must be at least 4 (half train, half test, two of each)");
        }
        if self.ids > 9999 {
            return bad("--ids must be at most 9999 (Market names have four pid digits)");
        }
        if !(2..=9).contains(&self.cameras) {
            return bad("--cameras must be between 2 and 9 (Market names have one camera digit)");
        }
        if self.height < 32 || self.width < 16 || self.height > 1024 || self.width > 512 {
            return bad("--size must be between 32x16 and 1024x512 (HxW)");
        }
        let (lo, hi) = self.images_per_id;
        if lo < 4 || lo > hi {
            return bad(
                "images per identity must be at least 4 (two cameras with two images each)",
            );
        }
        Ok(())
    }
}

/// The two domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    Source,
    Target,
}

impl Domain {
    pub const BOTH: [Domain; 2] = [Domain::Source, Domain::Target];

    pub fn dir_name(self) -> &'static str {
        match self {
            Domain::Source => "source",
            Domain::Target => "target",
        }
    }

    fn tag(self) -> u64 {
        match self {
            Domain::Source => 0x50,
            Domain::Target => 0x7a,
        }
    }

    fn style(self) -> DomainStyle {
        match self {
            Domain::Source => DomainStyle {
                palette: vec![
                    [0.85, 0.10, 0.10],
                    [0.10, 0.25, 0.85],
                    [0.95, 0.85, 0.10],
                    [0.10, 0.65, 0.20],
                    [0.95, 0.95, 0.95],
                    [0.08, 0.08, 0.08],
                    [0.95, 0.50, 0.05],
                    [0.50, 0.15, 0.65],
                    [0.95, 0.50, 0.70],
                    [0.55, 0.55, 0.55],
                    [0.10, 0.12, 0.35],
                    [0.10, 0.75, 0.85],
                    [0.75, 0.68, 0.45],
                    [0.35, 0.50, 0.75],
                ],
                wall: [0.70, 0.70, 0.68],
                ground: [0.50, 0.50, 0.50],
                bg_jitter: 0.08,
                texture: 0.05,
                clutter: 1,
                gain: (0.9, 1.15),
                cast_mean: [1.0, 1.0, 1.0],
                cast_jitter: 0.06,
                saturation: 1.0,
                blur: (0.0, 0.6),
                noise: (0.010, 0.025),
                render_scale: 1.0,
                person_height: (0.82, 0.95),
            },
            Domain::Target => DomainStyle {
                palette: vec![
                    [0.22, 0.22, 0.25],
                    [0.15, 0.20, 0.40],
                    [0.50, 0.32, 0.18],
                    [0.48, 0.52, 0.22],
                    [0.60, 0.15, 0.15],
                    [0.80, 0.74, 0.60],
                    [0.15, 0.40, 0.25],
                    [0.30, 0.42, 0.62],
                    [0.62, 0.18, 0.38],
                    [0.72, 0.56, 0.38],
                    [0.06, 0.06, 0.07],
                    [0.42, 0.48, 0.55],
                    [0.78, 0.62, 0.18],
                    [0.90, 0.88, 0.82],
                ],
                wall: [0.45, 0.38, 0.30],
                ground: [0.30, 0.33, 0.25],
                bg_jitter: 0.10,
                texture: 0.08,
                clutter: 2,
                gain: (0.75, 1.0),
                cast_mean: [1.06, 1.0, 0.88],
                cast_jitter: 0.06,
                saturation: 0.85,
                blur: (0.3, 1.0),
                noise: (0.015, 0.030),
                render_scale: 0.5,
                person_height: (0.76, 0.90),
            },
        }
    }
}

/// The systematic look of a domain.
struct DomainStyle {
    palette: Vec<Rgb>,
    wall: Rgb,
    ground: Rgb,
    bg_jitter: f32,
    texture: f32,
    clutter: usize,
    gain: (f64, f64),
    cast_mean: Rgb,
    cast_jitter: f64,
    saturation: f32,
    blur: (f64, f64),
    noise: (f64, f64),
    render_scale: f64,
    person_height: (f64, f64),
}

/// One camera of a domain.
#[derive(Clone, Debug)]
struct Camera {
    gain: f32,
    cast: Rgb,
    blur: f32,
    noise: f32,
    wall: Rgb,
    ground: Rgb,
    horizon: f32,
    tile: f32,
    panel: f32,
    scale: f32,
    dx: f32,
    /// Probabilities of front, back, side views.
    views: [f64; 3],
    shadow_dir: (f32, f32),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pattern {
    Solid,
    HStripes { period: f32 },
    VStripes { period: f32 },
    Checker { cell: f32 },
    Logo,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bottom {
    Trousers,
    Shorts,
    Skirt,
}

/// Everything that makes one person look like themselves.
#[derive(Clone, Debug, PartialEq)]
struct Identity {
    height: f32,
    width: f32,
    head: f32,
    torso: f32,
    skin: Rgb,
    hair: Rgb,
    long_hair: bool,
    top: Rgb,
    top_pattern: Pattern,
    top_second: Rgb,
    long_sleeves: bool,
    bottom: Rgb,
    bottom_kind: Bottom,
    shoes: Rgb,
    hat: Option<Rgb>,
    backpack: Option<Rgb>,
    shoulder_bag: Option<(Rgb, bool)>,
}

const SKIN: [Rgb; 5] = [
    [0.96, 0.80, 0.69],
    [0.87, 0.67, 0.52],
    [0.72, 0.52, 0.38],
    [0.52, 0.36, 0.25],
    [0.36, 0.24, 0.16],
];
const HAIR: [Rgb; 5] = [
    [0.06, 0.05, 0.04],
    [0.25, 0.16, 0.09],
    [0.55, 0.40, 0.20],
    [0.85, 0.75, 0.50],
    [0.60, 0.60, 0.60],
];

fn jitter(c: Rgb, rng: &mut Rng, amount: f32) -> Rgb {
    c.map(|v| (v + amount * rng.normal() as f32).clamp(0.0, 1.0))
}

impl Identity {
    fn draw(style: &DomainStyle, rng: &mut Rng) -> Self {
        let pick = |rng: &mut Rng| jitter(*rng.choose(&style.palette), rng, 0.04);
        let top = pick(rng);
        let mut top_second = pick(rng);
        while (0..3).map(|i| (top[i] - top_second[i]).abs()).sum::<f32>() < 0.3 {
            top_second = pick(rng);
        }
        let top_pattern = match rng.below(10) {
            0..=3 => Pattern::Solid,
            4 | 5 => Pattern::HStripes {
                period: rng.uniform(0.03, 0.06) as f32,
            },
            6 => Pattern::VStripes {
                period: rng.uniform(0.03, 0.05) as f32,
            },
            7 => Pattern::Checker {
                cell: rng.uniform(0.025, 0.045) as f32,
            },
            _ => Pattern::Logo,
        };
        let bottom_kind = match rng.below(10) {
            0..=6 => Bottom::Trousers,
            7 | 8 => Bottom::Shorts,
            _ => Bottom::Skirt,
        };
        Identity {
            height: rng.uniform(style.person_height.0, style.person_height.1) as f32,
            width: rng.uniform(0.85, 1.2) as f32,
            head: rng.uniform(0.12, 0.15) as f32,
            torso: rng.uniform(0.30, 0.36) as f32,
            skin: jitter(*rng.choose(&SKIN), rng, 0.02),
            hair: jitter(*rng.choose(&HAIR), rng, 0.02),
            long_hair: rng.chance(0.3),
            top,
            top_pattern,
            top_second,
            long_sleeves: rng.chance(0.6),
            bottom: pick(rng),
            bottom_kind,
            shoes: if rng.chance(0.7) {
                [0.1, 0.1, 0.1]
            } else {
                pick(rng)
            },
            hat: rng.chance(0.2).then(|| pick(rng)),
            backpack: rng.chance(0.35).then(|| pick(rng)),
            shoulder_bag: rng.chance(0.25).then(|| (pick(rng), rng.chance(0.5))),
        }
    }
}

/// Per-domain camera layout: each camera's rank for gain, blur, noise and cast direction. Stratifying these
/// (instead of drawing every camera independently) keeps a domain's difficulty from swinging with the seed: with
/// six cameras, independent draws sometimes made a whole domain dark or blurred.
struct CameraStrata {
    gain: Vec<usize>,
    blur: Vec<usize>,
    noise: Vec<usize>,
    cast: Vec<usize>,
    cast_phase: f64,
}

impl CameraStrata {
    fn draw(n: usize, rng: &mut Rng) -> Self {
        let mut perm = || {
            let mut p: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut p);
            p
        };
        let (gain, blur, noise, cast) = (perm(), perm(), perm(), perm());
        CameraStrata {
            gain,
            blur,
            noise,
            cast,
            cast_phase: rng.uniform(0.0, std::f64::consts::TAU),
        }
    }
}

impl Camera {
    /// Camera `c` of `strata.gain.len()`: its own stratum of each range, jittered within it.
    fn draw(style: &DomainStyle, strata: &CameraStrata, c: usize, rng: &mut Rng) -> Self {
        let n = strata.gain.len() as f64;
        let mut stratum = |range: (f64, f64), rank: usize| {
            range.0 + (range.1 - range.0) * (rank as f64 + rng.next_f64()) / n
        };
        let gain = stratum(style.gain, strata.gain[c]);
        let blur = stratum(style.blur, strata.blur[c]);
        let noise = stratum(style.noise, strata.noise[c]);
        // The cast moves the colour along a direction in the chroma plane, directions spread around the circle.
        let theta = strata.cast_phase + std::f64::consts::TAU * strata.cast[c] as f64 / n;
        let strength = style.cast_jitter * rng.uniform(0.8, 1.4);
        let cast = std::array::from_fn(|k| {
            let axis = theta - std::f64::consts::TAU * k as f64 / 3.0;
            (style.cast_mean[k] as f64 * (1.0 + strength * axis.cos())) as f32
        });
        let mut views = [
            rng.uniform(0.2, 1.0),
            rng.uniform(0.2, 1.0),
            rng.uniform(0.2, 1.0),
        ];
        let total: f64 = views.iter().sum();
        views.iter_mut().for_each(|v| *v /= total);
        let angle = rng.uniform(0.0, std::f64::consts::TAU);
        Camera {
            gain: gain as f32,
            cast,
            blur: blur as f32,
            noise: noise as f32,
            wall: jitter(style.wall, rng, style.bg_jitter),
            ground: jitter(style.ground, rng, style.bg_jitter),
            horizon: rng.uniform(0.45, 0.7) as f32,
            tile: rng.uniform(0.08, 0.2) as f32,
            panel: rng.uniform(0.15, 0.4) as f32,
            scale: rng.uniform(0.9, 1.05) as f32,
            dx: rng.uniform(-0.05, 0.05) as f32,
            views,
            shadow_dir: (angle.cos() as f32, angle.sin() as f32),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Rasterisation: convex polygons and ellipses painted back to front with 2x2 supersampled coverage.

#[derive(Clone, Debug)]
enum Geom {
    Ellipse {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        y_max: f32,
    },
    Poly(Vec<(f32, f32)>),
}

impl Geom {
    fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Geom {
        Geom::Poly(vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    }

    /// A quadrilateral band of width `w` from point a to point b (limbs, straps).
    fn limb(a: (f32, f32), b: (f32, f32), w: f32) -> Geom {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-3);
        let (nx, ny) = (-dy / len * w / 2.0, dx / len * w / 2.0);
        Geom::Poly(vec![
            (a.0 + nx, a.1 + ny),
            (b.0 + nx, b.1 + ny),
            (b.0 - nx, b.1 - ny),
            (a.0 - nx, a.1 - ny),
        ])
    }

    fn ellipse(cx: f32, cy: f32, rx: f32, ry: f32) -> Geom {
        Geom::Ellipse {
            cx,
            cy,
            rx,
            ry,
            y_max: f32::INFINITY,
        }
    }

    fn bbox(&self) -> (f32, f32, f32, f32) {
        match self {
            Geom::Ellipse {
                cx,
                cy,
                rx,
                ry,
                y_max,
            } => (cx - rx, cy - ry, cx + rx, (cy + ry).min(*y_max)),
            Geom::Poly(pts) => pts
                .iter()
                .fold((f32::MAX, f32::MAX, f32::MIN, f32::MIN), |b, p| {
                    (b.0.min(p.0), b.1.min(p.1), b.2.max(p.0), b.3.max(p.1))
                }),
        }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        match self {
            Geom::Ellipse {
                cx,
                cy,
                rx,
                ry,
                y_max,
            } => {
                let (u, v) = ((x - cx) / rx, (y - cy) / ry);
                y <= *y_max && u * u + v * v <= 1.0
            }
            Geom::Poly(pts) => {
                let mut sign = 0i8;
                for i in 0..pts.len() {
                    let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
                    let cross = (b.0 - a.0) * (y - a.1) - (b.1 - a.1) * (x - a.0);
                    let s = if cross > 0.0 {
                        1
                    } else if cross < 0.0 {
                        -1
                    } else {
                        0
                    };
                    if s != 0 {
                        if sign != 0 && s != sign {
                            return false;
                        }
                        sign = s;
                    }
                }
                true
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Paint {
    base: Rgb,
    second: Rgb,
    pattern: Pattern,
    /// Pattern origin and unit (the body height in pixels), so patterns scale with the person.
    origin: (f32, f32),
    unit: f32,
    /// Cylindrical shading around this centre line (half width); 0 disables.
    shade_cx: f32,
    shade_half: f32,
}

impl Paint {
    fn solid(c: Rgb) -> Paint {
        Paint {
            base: c,
            second: c,
            pattern: Pattern::Solid,
            origin: (0.0, 0.0),
            unit: 1.0,
            shade_cx: 0.0,
            shade_half: 0.0,
        }
    }

    fn shaded(mut self, cx: f32, half: f32) -> Paint {
        self.shade_cx = cx;
        self.shade_half = half;
        self
    }

    fn at(&self, x: f32, y: f32) -> Rgb {
        let u = (x - self.origin.0) / self.unit;
        let v = (y - self.origin.1) / self.unit;
        let use_second = match self.pattern {
            Pattern::Solid | Pattern::Logo => false,
            Pattern::HStripes { period } => (v / period).floor() as i64 % 2 == 1,
            Pattern::VStripes { period } => (u / period).floor().rem_euclid(2.0) == 1.0,
            Pattern::Checker { cell } => {
                ((u / cell).floor() + (v / cell).floor()).rem_euclid(2.0) == 1.0
            }
        };
        let c = if use_second { self.second } else { self.base };
        if self.shade_half > 0.0 {
            let t = ((x - self.shade_cx) / self.shade_half).clamp(-1.0, 1.0);
            let s = 1.0 - 0.3 * t * t;
            c.map(|v| v * s)
        } else {
            c
        }
    }
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<f32>,
}

impl Canvas {
    fn paint(&mut self, geom: &Geom, paint: &Paint) {
        let (x0, y0, x1, y1) = geom.bbox();
        let xs = (
            x0.floor().max(0.0) as usize,
            (x1.ceil().max(0.0) as usize).min(self.w),
        );
        let ys = (
            y0.floor().max(0.0) as usize,
            (y1.ceil().max(0.0) as usize).min(self.h),
        );
        for y in ys.0..ys.1 {
            for x in xs.0..xs.1 {
                let mut hits = 0;
                for (ox, oy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    if geom.contains(x as f32 + ox, y as f32 + oy) {
                        hits += 1;
                    }
                }
                if hits == 0 {
                    continue;
                }
                let alpha = hits as f32 / 4.0;
                let c = paint.at(x as f32 + 0.5, y as f32 + 0.5);
                let i = (y * self.w + x) * 3;
                for (dst, src) in self.px[i..i + 3].iter_mut().zip(c) {
                    *dst += alpha * (src - *dst);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum View {
    Front,
    Back,
    /// Side view; `true` when facing right.
    Side(bool),
}

/// Renders one image of `person` (None: background only) seen by `cam`, at the final size, as RGB8.
fn render(
    style: &DomainStyle,
    cam: &Camera,
    person: Option<&Identity>,
    cfg: &SynthConfig,
    rng: &mut Rng,
) -> RgbImage {
    let scale = style.render_scale;
    let rw = ((cfg.width as f64 * scale).round() as usize).max(8);
    let rh = ((cfg.height as f64 * scale).round() as usize).max(16);
    let mut canvas = Canvas {
        w: rw,
        h: rh,
        px: vec![0.0; rw * rh * 3],
    };
    draw_background(&mut canvas, style, cam, rng);
    if let Some(person) = person {
        let view = {
            let r = rng.next_f64();
            if r < cam.views[0] {
                View::Front
            } else if r < cam.views[0] + cam.views[1] {
                View::Back
            } else {
                View::Side(rng.chance(0.5))
            }
        };
        draw_person(&mut canvas, person, cam, view, rng);
        if rng.chance(0.12) {
            // A partial occluder (a passer-by's coat, a bin, a railing) over the lower body or one side.
            let c = jitter(*rng.choose(&style.palette), rng, 0.1);
            let (w, h) = (rw as f32, rh as f32);
            let geom = if rng.chance(0.5) {
                Geom::rect(0.0, h * rng.uniform(0.65, 0.85) as f32, w, h)
            } else {
                let x = w * rng.uniform(0.0, 0.3) as f32;
                if rng.chance(0.5) {
                    Geom::rect(0.0, h * 0.3, x, h)
                } else {
                    Geom::rect(w - x, h * 0.3, w, h)
                }
            };
            canvas.paint(&geom, &Paint::solid(c));
        }
    }
    // Illumination: camera gain with per-image variation, a linear shadow gradient, the colour cast, saturation.
    let gain = cam.gain * rng.uniform(0.9, 1.1) as f32;
    let shadow = rng.uniform(0.0, 0.35) as f32;
    for y in 0..rh {
        for x in 0..rw {
            let (u, v) = (x as f32 / rw as f32 - 0.5, y as f32 / rh as f32 - 0.5);
            let light = gain * (1.0 + shadow * (u * cam.shadow_dir.0 + v * cam.shadow_dir.1));
            let i = (y * rw + x) * 3;
            let c = [canvas.px[i], canvas.px[i + 1], canvas.px[i + 2]];
            let lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
            for ((dst, v), cast) in canvas.px[i..i + 3].iter_mut().zip(c).zip(cam.cast) {
                let saturated = lum + style.saturation * (v - lum);
                *dst = saturated * light * cast;
            }
        }
    }
    let sigma = cam.blur + rng.uniform(0.0, 0.3) as f32;
    gaussian_blur(&mut canvas, sigma);
    let raw: Vec<u8> = canvas
        .px
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let mut img = RgbImage::from_raw(rw as u32, rh as u32, raw).expect("canvas size");
    if rw != cfg.width || rh != cfg.height {
        img = resize(&img, cfg.height, cfg.width, Interpolation::Bilinear);
    }
    // Sensor noise at the final resolution.
    let noise = cam.noise * 255.0;
    for v in img.as_mut().iter_mut() {
        *v = (*v as f32 + noise * rng.normal() as f32)
            .round()
            .clamp(0.0, 255.0) as u8;
    }
    img
}

fn draw_background(canvas: &mut Canvas, style: &DomainStyle, cam: &Camera, rng: &mut Rng) {
    let (w, h) = (canvas.w as f32, canvas.h as f32);
    let horizon = (cam.horizon + rng.uniform(-0.05, 0.05) as f32) * h;
    let shift = rng.uniform(0.0, 1.0) as f32;
    let waves: Vec<(f32, f32, f32, f32)> = (0..3)
        .map(|_| {
            (
                rng.uniform(1.0, 6.0) as f32,
                rng.uniform(1.0, 6.0) as f32,
                rng.uniform(0.0, 6.3) as f32,
                style.texture * rng.uniform(0.3, 1.0) as f32,
            )
        })
        .collect();
    for y in 0..canvas.h {
        for x in 0..canvas.w {
            let (u, v) = (x as f32 / w, y as f32 / h);
            let (base, texture) = if (y as f32) < horizon {
                // Wall: vertical panels with seams.
                let p = (u / cam.panel + shift).fract();
                (cam.wall, if p < 0.06 { -0.12 } else { 0.0 })
            } else {
                // Ground: tiles getting larger towards the camera (cheap perspective).
                let depth = ((y as f32 - horizon) / (h - horizon).max(1.0)).max(0.05);
                let tu = ((u - 0.5) / (cam.tile * (0.4 + depth)) + shift).fract();
                let tv = (depth.ln() / 0.35).fract().abs();
                (
                    cam.ground,
                    if tu < 0.08 || tv < 0.08 {
                        -0.08
                    } else {
                        0.02 * depth
                    },
                )
            };
            let mut t = texture;
            for &(fu, fv, ph, a) in &waves {
                t += a * (std::f32::consts::TAU * (fu * u + fv * v) + ph).sin();
            }
            let i = (y * canvas.w + x) * 3;
            for (dst, b) in canvas.px[i..i + 3].iter_mut().zip(base) {
                *dst = (b * (1.0 + t)).clamp(0.0, 1.0);
            }
        }
    }
    // Clutter: poles, signs, benches in background colours.
    for _ in 0..rng.below(style.clutter + 1) {
        let c = jitter(
            if rng.chance(0.5) {
                cam.wall
            } else {
                cam.ground
            },
            rng,
            0.2,
        );
        let x0 = w * rng.uniform(-0.1, 1.0) as f32;
        let bw = w * rng.uniform(0.05, 0.3) as f32;
        let y0 = h * rng.uniform(0.0, 0.7) as f32;
        let bh = h * rng.uniform(0.1, 0.6) as f32;
        canvas.paint(&Geom::rect(x0, y0, x0 + bw, y0 + bh), &Paint::solid(c));
    }
}

fn draw_person(canvas: &mut Canvas, p: &Identity, cam: &Camera, view: View, rng: &mut Rng) {
    let (w, h) = (canvas.w as f32, canvas.h as f32);
    let unit = p.height * cam.scale * rng.uniform(0.93, 1.07) as f32 * h;
    let foot = h * (0.97 + rng.uniform(-0.03, 0.02) as f32);
    let top = foot - unit;
    let cx = w * (0.5 + cam.dx + 0.04 * rng.normal() as f32);
    let side = matches!(view, View::Side(_));
    let facing = if let View::Side(right) = view {
        if right {
            1.0
        } else {
            -1.0
        }
    } else {
        0.0
    };
    let stride = rng.uniform(-1.0, 1.0) as f32;
    let girth = if side { 0.6 } else { 1.0 };

    let head_h = p.head * unit;
    let head_w = head_h * if side { 0.85 } else { 0.78 };
    let head_cy = top + head_h / 2.0;
    let torso_top = top + head_h * 0.95;
    let hip = torso_top + p.torso * unit;
    let shoulder_w = 0.26 * unit * p.width * girth;
    let hip_w = shoulder_w * 0.85;
    let leg_w = 0.11 * unit * p.width;
    let arm_w = 0.065 * unit * p.width;
    let hand_y = hip + 0.06 * unit;

    let torso = Geom::Poly(vec![
        (cx - shoulder_w / 2.0, torso_top),
        (cx + shoulder_w / 2.0, torso_top),
        (cx + hip_w / 2.0, hip),
        (cx - hip_w / 2.0, hip),
    ]);
    let top_paint = Paint {
        base: p.top,
        second: p.top_second,
        pattern: p.top_pattern,
        origin: (cx, torso_top),
        unit,
        shade_cx: cx,
        shade_half: shoulder_w / 2.0,
    };
    let skin = Paint::solid(p.skin).shaded(cx, shoulder_w);
    let bottom = Paint::solid(p.bottom).shaded(cx, hip_w);

    // Behind the body: a backpack seen from the side, long hair seen from the front.
    if let (Some(bag), true) = (p.backpack, side) {
        let bx = cx - facing * shoulder_w * 0.9;
        canvas.paint(
            &Geom::rect(
                bx - 0.09 * unit,
                torso_top + 0.03 * unit,
                bx + 0.09 * unit,
                hip - 0.05 * unit,
            ),
            &Paint::solid(bag),
        );
    }
    if p.long_hair && view == View::Front {
        canvas.paint(
            &Geom::rect(
                cx - head_w * 0.55,
                head_cy,
                cx + head_w * 0.55,
                torso_top + 0.09 * unit,
            ),
            &Paint::solid(p.hair),
        );
    }

    // Legs and shoes.
    let leg_paint = match p.bottom_kind {
        Bottom::Trousers => bottom,
        Bottom::Shorts | Bottom::Skirt => skin,
    };
    let feet: [(f32, f32); 2] = if side {
        [
            (cx + stride * 0.12 * unit, foot),
            (cx - stride * 0.12 * unit, foot),
        ]
    } else {
        [
            (cx - hip_w * 0.25 + stride * 0.02 * unit, foot),
            (cx + hip_w * 0.25 - stride * 0.02 * unit, foot),
        ]
    };
    let hips = if side {
        [(cx, hip), (cx, hip)]
    } else {
        [(cx - hip_w * 0.25, hip), (cx + hip_w * 0.25, hip)]
    };
    for (h0, f) in hips.iter().zip(feet) {
        canvas.paint(&Geom::limb(*h0, f, leg_w), &leg_paint);
        if p.bottom_kind == Bottom::Shorts {
            let knee = (h0.0 + 0.45 * (f.0 - h0.0), h0.1 + 0.45 * (f.1 - h0.1));
            canvas.paint(&Geom::limb(*h0, knee, leg_w * 1.15), &bottom);
        }
        canvas.paint(
            &Geom::ellipse(
                f.0 + facing * 0.03 * unit,
                f.1 - 0.015 * unit,
                0.05 * unit,
                0.02 * unit,
            ),
            &Paint::solid(p.shoes),
        );
    }
    if p.bottom_kind == Bottom::Skirt {
        let knee_y = hip + 0.22 * unit;
        canvas.paint(
            &Geom::Poly(vec![
                (cx - hip_w / 2.0, hip - 0.02 * unit),
                (cx + hip_w / 2.0, hip - 0.02 * unit),
                (cx + hip_w * 0.8, knee_y),
                (cx - hip_w * 0.8, knee_y),
            ]),
            &bottom,
        );
    } else {
        // The seat of the trousers/shorts joins the legs under the torso.
        canvas.paint(
            &Geom::rect(
                cx - hip_w / 2.0,
                hip - 0.02 * unit,
                cx + hip_w / 2.0,
                hip + 0.06 * unit,
            ),
            &bottom,
        );
    }

    // Torso and arms.
    let arm = |canvas: &mut Canvas, shoulder: (f32, f32), hand: (f32, f32)| {
        let sleeve = if p.long_sleeves { &top_paint } else { &skin };
        canvas.paint(&Geom::limb(shoulder, hand, arm_w), sleeve);
        if !p.long_sleeves {
            let elbow = (
                shoulder.0 + 0.4 * (hand.0 - shoulder.0),
                shoulder.1 + 0.4 * (hand.1 - shoulder.1),
            );
            canvas.paint(&Geom::limb(shoulder, elbow, arm_w * 1.2), &top_paint);
        }
        canvas.paint(
            &Geom::ellipse(hand.0, hand.1, arm_w * 0.6, arm_w * 0.7),
            &skin,
        );
    };
    canvas.paint(&torso, &top_paint);
    if side {
        arm(
            canvas,
            (cx, torso_top + 0.03 * unit),
            (cx - stride * 0.12 * unit, hand_y),
        );
    } else {
        let swing = stride * 0.02 * unit;
        arm(
            canvas,
            (cx - shoulder_w / 2.0 - arm_w * 0.3, torso_top + 0.03 * unit),
            (cx - shoulder_w / 2.0 - arm_w * 0.6 + swing, hand_y),
        );
        arm(
            canvas,
            (cx + shoulder_w / 2.0 + arm_w * 0.3, torso_top + 0.03 * unit),
            (cx + shoulder_w / 2.0 + arm_w * 0.6 - swing, hand_y),
        );
    }
    if p.top_pattern == Pattern::Logo && view == View::Front {
        let s = 0.05 * unit;
        let ly = torso_top + 0.09 * unit;
        canvas.paint(
            &Geom::rect(cx - s, ly, cx + s, ly + 1.4 * s),
            &Paint::solid(p.top_second),
        );
    }

    // Bags over the body.
    if let Some(bag) = p.backpack {
        match view {
            View::Back => canvas.paint(
                &Geom::rect(
                    cx - shoulder_w * 0.38,
                    torso_top + 0.03 * unit,
                    cx + shoulder_w * 0.38,
                    hip - 0.04 * unit,
                ),
                &Paint::solid(bag).shaded(cx, shoulder_w * 0.4),
            ),
            View::Front => {
                for s in [-1.0, 1.0] {
                    let x = cx + s * shoulder_w * 0.3;
                    canvas.paint(
                        &Geom::rect(
                            x - 0.012 * unit,
                            torso_top,
                            x + 0.012 * unit,
                            hip - 0.08 * unit,
                        ),
                        &Paint::solid(bag),
                    );
                }
            }
            View::Side(_) => {}
        }
    }
    if let Some((bag, right)) = p.shoulder_bag {
        let s = if side {
            facing
        } else if right {
            1.0
        } else {
            -1.0
        };
        let bag_x = cx + s * hip_w * if side { 0.2 } else { 0.55 };
        if !side {
            canvas.paint(
                &Geom::limb(
                    (cx - s * shoulder_w * 0.4, torso_top),
                    (bag_x, hip - 0.02 * unit),
                    0.015 * unit,
                ),
                &Paint::solid(bag),
            );
        }
        canvas.paint(
            &Geom::rect(
                bag_x - 0.06 * unit,
                hip - 0.04 * unit,
                bag_x + 0.06 * unit,
                hip + 0.07 * unit,
            ),
            &Paint::solid(bag),
        );
    }

    // Head, hair, hat.
    let hair = Paint::solid(p.hair);
    let head = Geom::ellipse(cx, head_cy, head_w / 2.0, head_h / 2.0);
    match view {
        View::Back => canvas.paint(&head, &hair),
        _ => {
            canvas.paint(&head, &skin);
            let y_max = head_cy - head_h * if side { 0.05 } else { 0.2 };
            canvas.paint(
                &Geom::Ellipse {
                    cx,
                    cy: head_cy - head_h * 0.04,
                    rx: head_w * 0.54,
                    ry: head_h * 0.54,
                    y_max,
                },
                &hair,
            );
        }
    }
    if p.long_hair && view == View::Back {
        canvas.paint(
            &Geom::rect(
                cx - head_w * 0.5,
                head_cy,
                cx + head_w * 0.5,
                torso_top + 0.1 * unit,
            ),
            &hair,
        );
    }
    if let Some(hat) = p.hat {
        let y_max = head_cy - head_h * 0.15;
        canvas.paint(
            &Geom::Ellipse {
                cx,
                cy: head_cy - head_h * 0.1,
                rx: head_w * 0.58,
                ry: head_h * 0.55,
                y_max,
            },
            &Paint::solid(hat),
        );
        let brim = if side { facing * head_w * 0.5 } else { 0.0 };
        canvas.paint(
            &Geom::rect(
                cx - head_w * 0.6 + brim.min(0.0),
                y_max - 0.01 * unit,
                cx + head_w * 0.6 + brim.max(0.0),
                y_max + 0.012 * unit,
            ),
            &Paint::solid(hat),
        );
    }
}

/// Separable Gaussian blur with clamped borders; a no-op for tiny sigma.
fn gaussian_blur(canvas: &mut Canvas, sigma: f32) {
    if sigma < 0.3 {
        return;
    }
    let radius = (sigma * 2.5).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let (w, h) = (canvas.w as isize, canvas.h as isize);
    let mut tmp = vec![0.0f32; canvas.px.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (k, &kv) in kernel.iter().enumerate() {
                    let sx = (x + k as isize - radius).clamp(0, w - 1);
                    acc += kv * canvas.px[((y * w + sx) * 3) as usize + c as usize];
                }
                tmp[((y * w + x) * 3) as usize + c as usize] = acc;
            }
        }
    }
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (k, &kv) in kernel.iter().enumerate() {
                    let sy = (y + k as isize - radius).clamp(0, h - 1);
                    acc += kv * tmp[((sy * w + x) * 3) as usize + c as usize];
                }
                canvas.px[((y * w + x) * 3) as usize + c as usize] = acc;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The dataset plan: which image goes where under which name.

/// Where one image goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthSplit {
    Train,
    Query,
    Gallery,
}

impl SynthSplit {
    pub fn dir_name(self) -> &'static str {
        match self {
            SynthSplit::Train => "bounding_box_train",
            SynthSplit::Query => "query",
            SynthSplit::Gallery => "bounding_box_test",
        }
    }
}

/// One planned image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthImage {
    pub domain: Domain,
    pub split: SynthSplit,
    /// Market pid: 1.. for identities, 0 for distractors, -1 for junk.
    pub pid: i32,
    /// 0-based camera.
    pub camid: u32,
    /// Which identity's appearance (index into the domain's identities; distractors come after the real ones).
    pub identity: Option<usize>,
    /// Unique per (domain, pid, camera): Market's frame number.
    pub frame: u32,
}

impl SynthImage {
    /// Market-1501 style name, e.g. `0002_c1s1_000451_01.jpg`.
    pub fn file_name(&self) -> String {
        if self.pid < 0 {
            format!("-1_c{}s1_{:06}_01.jpg", self.camid + 1, self.frame)
        } else {
            format!(
                "{:04}_c{}s1_{:06}_01.jpg",
                self.pid,
                self.camid + 1,
                self.frame
            )
        }
    }

    pub fn relative_path(&self) -> PathBuf {
        Path::new(self.domain.dir_name())
            .join(self.split.dir_name())
            .join(self.file_name())
    }
}

/// How many images `write_benchmark` writes for `cfg` (both domains, every split): the total of
/// its progress reports.
pub fn planned_images(cfg: &SynthConfig) -> usize {
    Domain::BOTH
        .iter()
        .map(|&d| plan_domain(cfg, d).len())
        .sum()
}

/// Plans every image of one domain: identities, cameras, splits and names.
///
/// Train identities: all their images in `bounding_box_train`. Test identities visit 2-4 cameras with at least two
/// images in each; one image from each of up to two visited cameras becomes a query, the rest go to the gallery,
/// so every query has a same-identity gallery image in another camera. The gallery also holds Market-style
/// distractors (pid 0, people never queried) and a few junk crops (pid -1, background only) that loaders drop.
pub fn plan_domain(cfg: &SynthConfig, domain: Domain) -> Vec<SynthImage> {
    let mut out = Vec::new();
    let n_train = cfg.ids / 2;
    let frame = |pid: i32, cam: u32, counters: &mut std::collections::HashMap<(i32, u32), u32>| {
        let c = counters.entry((pid, cam)).or_insert(0);
        *c += 1;
        *c * 25 + 1
    };
    let mut counters = std::collections::HashMap::new();
    for id in 0..cfg.ids {
        let mut rng = Rng::keyed(&[cfg.seed, domain.tag(), 0x91a2, id as u64]);
        let n_images =
            cfg.images_per_id.0 + rng.below(cfg.images_per_id.1 - cfg.images_per_id.0 + 1);
        let max_visits = cfg.cameras.min(4).min(n_images / 2);
        let visits = 2 + rng.below(max_visits - 1);
        let mut cams: Vec<u32> = (0..cfg.cameras as u32).collect();
        rng.shuffle(&mut cams);
        cams.truncate(visits);
        let mut per_image: Vec<u32> = cams.iter().flat_map(|&c| [c, c]).collect();
        while per_image.len() < n_images {
            per_image.push(*rng.choose(&cams));
        }
        per_image.sort_unstable();
        let pid = id as i32 + 1;
        let query_cams: Vec<u32> = cams.iter().take(2).copied().collect();
        let mut queried = Vec::new();
        for cam in per_image {
            let split = if id < n_train {
                SynthSplit::Train
            } else if query_cams.contains(&cam) && !queried.contains(&cam) {
                queried.push(cam);
                SynthSplit::Query
            } else {
                SynthSplit::Gallery
            };
            let frame = frame(pid, cam, &mut counters);
            out.push(SynthImage {
                domain,
                split,
                pid,
                camid: cam,
                identity: Some(id),
                frame,
            });
        }
    }
    let mut rng = Rng::keyed(&[cfg.seed, domain.tag(), 0xd157]);
    for k in 0..(cfg.ids / 8).max(1) {
        let cam = rng.below(cfg.cameras) as u32;
        let frame = frame(0, cam, &mut counters);
        out.push(SynthImage {
            domain,
            split: SynthSplit::Gallery,
            pid: 0,
            camid: cam,
            identity: Some(cfg.ids + k),
            frame,
        });
    }
    for _ in 0..(cfg.ids / 16).max(1) {
        let cam = rng.below(cfg.cameras) as u32;
        let frame = frame(-1, cam, &mut counters);
        out.push(SynthImage {
            domain,
            split: SynthSplit::Gallery,
            pid: -1,
            camid: cam,
            identity: None,
            frame,
        });
    }
    out
}

/// Everything needed to render a domain's images.
struct DomainModel {
    style: DomainStyle,
    cameras: Vec<Camera>,
    identities: Vec<Identity>,
}

impl DomainModel {
    fn new(cfg: &SynthConfig, domain: Domain) -> Self {
        let style = domain.style();
        let strata = CameraStrata::draw(
            cfg.cameras,
            &mut Rng::keyed(&[cfg.seed, domain.tag(), 0xca4]),
        );
        let cameras = (0..cfg.cameras)
            .map(|c| {
                let mut rng = Rng::keyed(&[cfg.seed, domain.tag(), 0xca3, c as u64]);
                Camera::draw(&style, &strata, c, &mut rng)
            })
            .collect();
        // Distractor identities are drawn after the real ones (indices ids..).
        let n = cfg.ids + (cfg.ids / 8).max(1);
        let identities = (0..n)
            .map(|i| {
                Identity::draw(
                    &style,
                    &mut Rng::keyed(&[cfg.seed, domain.tag(), 0x1d, i as u64]),
                )
            })
            .collect();
        DomainModel {
            style,
            cameras,
            identities,
        }
    }
}

/// Renders one planned image.
pub fn render_image(cfg: &SynthConfig, image: &SynthImage) -> RgbImage {
    render_with(&DomainModel::new(cfg, image.domain), cfg, image)
}

fn render_with(model: &DomainModel, cfg: &SynthConfig, image: &SynthImage) -> RgbImage {
    let mut rng = Rng::keyed(&[
        cfg.seed,
        image.domain.tag(),
        0x1a6e,
        image.pid as u64,
        image.camid as u64,
        image.frame as u64,
    ]);
    let person = image.identity.map(|i| &model.identities[i]);
    render(
        &model.style,
        &model.cameras[image.camid as usize],
        person,
        cfg,
        &mut rng,
    )
}

/// Encodes an image as JPEG with the `image` crate's encoder (deterministic for a given crate version).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, SynthError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| SynthError::Encode(e.to_string()))?;
    Ok(bytes)
}

/// Renders and encodes every image of both domains in memory, in plan order: (relative path, JPEG bytes).
/// `progress` is called once per finished image (from worker threads).
pub fn generate(
    cfg: &SynthConfig,
    progress: &(dyn Fn() + Sync),
) -> Result<Vec<(PathBuf, Vec<u8>)>, SynthError> {
    cfg.validate()?;
    let mut jobs = Vec::new();
    let mut models = Vec::new();
    for domain in Domain::BOTH {
        models.push(DomainModel::new(cfg, domain));
        jobs.extend(plan_domain(cfg, domain));
    }
    jobs.par_iter()
        .map(|job| {
            let model = &models[if job.domain == Domain::Source { 0 } else { 1 }];
            let bytes = encode_jpeg(&render_with(model, cfg, job), cfg.jpeg_quality)?;
            progress();
            Ok((job.relative_path(), bytes))
        })
        .collect()
}

/// The hidden staging folder of a domain: `out/.<domain>.partial-<pid>`.
fn staging_dir(out: &Path, domain: Domain) -> PathBuf {
    out.join(format!(
        ".{}.partial-{}",
        domain.dir_name(),
        std::process::id()
    ))
}

/// Writes the benchmark under `out` (`out/source`, `out/target`, `out/synth.json`), streaming
/// each image to disk as soon as it is rendered (memory stays O(threads), not O(images)).
///
/// - `out` is locked for the whole run ([`crate::io::OutputLock`]): a second `synth` into the same
///   folder fails at once, naming the folder and the holder's pid.
/// - Staging folders `.<domain>.partial-<pid>` left by killed runs are removed (under the lock no
///   other run can be writing them).
/// - A non-empty `out` (anything but the lock and stale staging folders) is refused unless
///   `overwrite` is set; then only `source/`, `target/` and `synth.json` are replaced.
/// - Each domain is written into its staging folder and renamed into place when complete, so an
///   interrupted run never leaves a half-written domain behind.
///
/// `progress` is called once per image written (from worker threads). Returns the image count.
pub fn write_benchmark(
    cfg: &SynthConfig,
    out: &Path,
    overwrite: bool,
    progress: &(dyn Fn() + Sync),
) -> Result<usize, SynthError> {
    cfg.validate()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| SynthError::Io { path, error }
    };
    let _lock = crate::io::OutputLock::acquire(out)?;
    let mut contents = Vec::new();
    for entry in std::fs::read_dir(out).map_err(io(out))? {
        let entry = entry.map_err(io(out))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == crate::io::OutputLock::FILE_NAME {
            continue;
        }
        if name.starts_with('.') && name.contains(".partial-") {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
            eprintln!(
                "removed {}, left by an interrupted run",
                crate::io::shown(&path)
            );
            continue;
        }
        contents.push(name);
    }
    contents.sort();
    if !contents.is_empty() && !overwrite {
        let shown: Vec<&str> = contents.iter().take(5).map(String::as_str).collect();
        return Err(SynthError::Exists {
            path: out.to_path_buf(),
            reason: format!(
                "is not empty (holds {}{}); pass --overwrite to replace the benchmark in it",
                shown.join(", "),
                if contents.len() > 5 { ", ..." } else { "" }
            ),
        });
    }
    let mut written = 0;
    for domain in Domain::BOTH {
        let stage = staging_dir(out, domain);
        for split in [SynthSplit::Train, SynthSplit::Query, SynthSplit::Gallery] {
            let d = stage.join(split.dir_name());
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let model = DomainModel::new(cfg, domain);
        let jobs = plan_domain(cfg, domain);
        let result = jobs.par_iter().try_for_each(|job| {
            let bytes = encode_jpeg(&render_with(&model, cfg, job), cfg.jpeg_quality)?;
            let path = stage.join(job.split.dir_name()).join(job.file_name());
            std::fs::write(&path, bytes).map_err(io(&path))?;
            progress();
            Ok::<(), SynthError>(())
        });
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
        let dir = out.join(domain.dir_name());
        if std::fs::symlink_metadata(&dir).is_ok() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::rename(&stage, &dir).map_err(io(&dir))?;
        written += jobs.len();
    }
    let manifest = serde_json::json!({
        "generator": "unreid synth",
        "version": env!("CARGO_PKG_VERSION"),
        "seed": cfg.seed,
        "ids": cfg.ids,
        "cameras": cfg.cameras,
        "height": cfg.height,
        "width": cfg.width,
        "images_per_id": [cfg.images_per_id.0, cfg.images_per_id.1],
        "jpeg_quality": cfg.jpeg_quality,
        "images": written,
    });
    let manifest_path = out.join("synth.json");
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| SynthError::Encode(e.to_string()))?;
    crate::io::write_atomic(&manifest_path, (text + "\n").as_bytes())
        .map_err(io(&manifest_path))?;
    Ok(written)
}
