//! The synthetic video world: coloured shapes moving over textured,
//! cluttered backgrounds, entering and leaving the frame, occluding each
//! other, with exact ground truth in the TAO format. Everything follows from
//! the seed.

use std::path::{Path, PathBuf};

use owltrack_decoder::{image, VideoWriter, WriterOptions};
use serde::Serialize;

use crate::error::{Result, TrackerError};
use crate::rng::Pcg;
use crate::tao;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
}

pub const SHAPES: [Shape; 4] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Star];

/// The colours of the vocabulary and how they are painted.
pub const COLOURS: [(&str, [u8; 3]); 6] = [
    ("red", [215, 40, 35]),
    ("green", [45, 165, 60]),
    ("blue", [40, 75, 215]),
    ("yellow", [235, 205, 40]),
    ("white", [245, 245, 240]),
    ("black", [22, 22, 26]),
];

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
        }
    }

    /// Area for a shape of radius `r` (circumradius; half-diagonal for squares).
    fn area(self, r: f64) -> f64 {
        match self {
            Shape::Circle => std::f64::consts::PI * r * r,
            Shape::Square => 2.0 * r * r,
            Shape::Triangle => 3.0 * 3f64.sqrt() / 4.0 * r * r,
            Shape::Star => 5.0 * r * (STAR_INNER * r) * 36f64.to_radians().sin(),
        }
    }

    /// Radius of the largest circle inside the shape: how much it can hide.
    fn inner_radius(self, r: f64) -> f64 {
        match self {
            Shape::Circle => r,
            Shape::Square => r / 2f64.sqrt(),
            Shape::Triangle => r / 2.0,
            Shape::Star => STAR_INNER * r * 0.8,
        }
    }

    /// Whether (x, y), relative to the centre and already un-rotated, is inside.
    fn contains(self, x: f64, y: f64, r: f64) -> bool {
        match self {
            Shape::Circle => x * x + y * y <= r * r,
            Shape::Square => {
                let half = r / 2f64.sqrt();
                x.abs() <= half && y.abs() <= half
            }
            Shape::Triangle => inside_polygon(x, y, &regular_polygon(3, r, r)),
            Shape::Star => inside_polygon(x, y, &regular_polygon(5, r, STAR_INNER * r)),
        }
    }
}

const STAR_INNER: f64 = 0.45;

/// Vertices of a polygon with `points` tips at radius `outer` (and, when
/// `inner` differs, notches at `inner` between them), first tip pointing up.
fn regular_polygon(points: usize, outer: f64, inner: f64) -> Vec<(f64, f64)> {
    let notched = (inner - outer).abs() > f64::EPSILON;
    let count = if notched { points * 2 } else { points };
    (0..count)
        .map(|i| {
            let radius = if notched && i % 2 == 1 { inner } else { outer };
            let angle =
                -std::f64::consts::FRAC_PI_2 + std::f64::consts::TAU * i as f64 / count as f64;
            (radius * angle.cos(), radius * angle.sin())
        })
        .collect()
}

/// Even-odd rule; works for the star's concave outline.
fn inside_polygon(x: f64, y: f64, vertices: &[(f64, f64)]) -> bool {
    let mut inside = false;
    let mut j = vertices.len() - 1;
    for i in 0..vertices.len() {
        let (xi, yi) = vertices[i];
        let (xj, yj) = vertices[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Category id of a (colour, shape) pair: colours major, shapes minor, from 1.
pub fn category_id(colour: usize, shape: usize) -> u64 {
    (colour * SHAPES.len() + shape + 1) as u64
}

/// The vocabulary: every colour with every shape, named like "red circle".
pub fn categories() -> Vec<tao::Category> {
    let mut categories = Vec::new();
    for (c, (colour, _)) in COLOURS.iter().enumerate() {
        for (s, shape) in SHAPES.iter().enumerate() {
            categories.push(tao::Category {
                id: category_id(c, s),
                name: format!("{colour} {}", shape.name()),
                synset: None,
            });
        }
    }
    categories
}

#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: f64,
    pub seed: u64,
    pub challenge: Challenge,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            width: 640,
            height: 360,
            frames: 90,
            fps: 25.0,
            seed: 0,
            challenge: Challenge::default(),
        }
    }
}

/// How hard the world is on a tracker. The default is the world the
/// built-in model was trained on; a seed gives the same bytes under it as
/// it always has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Challenge {
    /// Full occlusions per video (a larger object passing right over a
    /// smaller one). `None`: one in most videos (a chance of 0.75).
    pub occlusions: Option<u32>,
    /// The chance that a wandering object has a look-alike twin moving
    /// alongside it.
    pub twin_chance: f64,
    /// Pairs of look-alikes per video whose paths cross.
    pub crossings: u32,
}

impl Default for Challenge {
    fn default() -> Self {
        Challenge {
            occlusions: None,
            twin_chance: 0.35,
            crossings: 0,
        }
    }
}

impl SynthConfig {
    fn validate(&self) -> Result<()> {
        if self.width < 64 || self.height < 64 || self.width > 4096 || self.height > 4096 {
            return Err(TrackerError::InvalidOption(format!(
                "frame size {}x{} must be between 64 and 4096 on each side",
                self.width, self.height
            )));
        }
        if !(0.0..=1.0).contains(&self.challenge.twin_chance) {
            return Err(TrackerError::InvalidOption(format!(
                "the twin chance {} must be between 0 and 1",
                self.challenge.twin_chance
            )));
        }
        if self.frames == 0 || !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(TrackerError::InvalidOption(
                "need at least one frame and a positive fps".into(),
            ));
        }
        Ok(())
    }
}

/// Where an object is in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pose {
    x: f64,
    y: f64,
    angle: f64,
}

#[derive(Debug, Clone)]
struct Object {
    track: usize,
    shape: usize,
    colour: usize,
    paint: [f64; 3],
    radius: f64,
    depth: f64,
    poses: Vec<Option<Pose>>,
}

/// One object's ground truth in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// Track number within the video, from 0.
    pub track: usize,
    pub category_id: u64,
    /// `[x, y, w, h]` of the visible pixels.
    pub bbox: [f64; 4],
    /// Visible pixels over the shape's whole area (occlusion and frame edges
    /// both hide parts).
    pub visibility: f64,
    pub visible_pixels: usize,
}

/// A whole simulated video: the background, and every object's path.
pub struct VideoWorld {
    config: SynthConfig,
    index: usize,
    background: Vec<u8>,
    objects: Vec<Object>,
}

/// Objects count as present when at least this many of their pixels and
/// this share of their area are visible.
const MIN_VISIBLE_PIXELS: usize = 20;
const MIN_VISIBILITY: f64 = 0.08;

impl VideoWorld {
    pub fn new(config: &SynthConfig, index: usize) -> Result<Self> {
        config.validate()?;
        let stream = index as u64 + 1;
        let mut rng = Pcg::new(config.seed, stream);
        let background = paint_background(config, &mut rng);
        let objects = plan_objects(
            config,
            &mut Pcg::new(config.seed ^ 0x005e_ed0b_1ec7, stream),
        );
        Ok(VideoWorld {
            config: config.clone(),
            index,
            background,
            objects,
        })
    }

    pub fn name(&self) -> String {
        format!("synth_s{}_{:04}", self.config.seed, self.index)
    }

    /// The static background every frame is drawn over (before sensor noise).
    pub fn background(&self) -> &[u8] {
        &self.background
    }

    pub fn tracks(&self) -> usize {
        self.objects.len()
    }

    /// Category of track `track`.
    pub fn category_of(&self, track: usize) -> u64 {
        let object = &self.objects[track];
        category_id(object.colour, object.shape)
    }

    /// Renders frame `frame`: packed RGB8 and the ground truth of every
    /// object visible enough to annotate.
    pub fn render(&self, frame: usize) -> (Vec<u8>, Vec<GroundTruth>) {
        let (w, h) = (self.config.width as usize, self.config.height as usize);
        let mut rgb = self.background.clone();
        // Which object owns each pixel once everything is drawn.
        let mut owner: Vec<u16> = vec![u16::MAX; w * h];
        let mut order: Vec<&Object> = self
            .objects
            .iter()
            .filter(|o| o.pose(frame).is_some())
            .collect();
        order.sort_by(|a, b| a.depth.total_cmp(&b.depth));
        for object in &order {
            if let Some(pose) = object.pose(frame) {
                draw(&mut rgb, &mut owner, w, h, object, pose);
            }
        }
        add_sensor_noise(&mut rgb, self.config.seed, self.index, frame);

        let mut visible =
            vec![(usize::MAX, usize::MAX, 0usize, 0usize, 0usize); self.objects.len()];
        for (i, &id) in owner.iter().enumerate() {
            if id == u16::MAX {
                continue;
            }
            let (x, y) = (i % w, i / w);
            let v = &mut visible[id as usize];
            v.0 = v.0.min(x);
            v.1 = v.1.min(y);
            v.2 = v.2.max(x);
            v.3 = v.3.max(y);
            v.4 += 1;
        }
        let truths = self
            .objects
            .iter()
            .filter_map(|object| {
                let (x0, y0, x1, y1, count) = visible[object.track];
                let area = SHAPES[object.shape].area(object.radius);
                let visibility = (count as f64 / area).min(1.0);
                (count >= MIN_VISIBLE_PIXELS && visibility >= MIN_VISIBILITY).then(|| GroundTruth {
                    track: object.track,
                    category_id: category_id(object.colour, object.shape),
                    bbox: [
                        x0 as f64,
                        y0 as f64,
                        (x1 - x0 + 1) as f64,
                        (y1 - y0 + 1) as f64,
                    ],
                    visibility,
                    visible_pixels: count,
                })
            })
            .collect();
        (rgb, truths)
    }
}

impl Object {
    fn pose(&self, frame: usize) -> Option<Pose> {
        self.poses.get(frame).copied().flatten()
    }
}

fn draw(rgb: &mut [u8], owner: &mut [u16], w: usize, h: usize, object: &Object, pose: Pose) {
    let r = object.radius;
    let x0 = (pose.x - r - 1.0).floor().max(0.0) as usize;
    let y0 = (pose.y - r - 1.0).floor().max(0.0) as usize;
    let x1 = ((pose.x + r + 1.0).ceil().max(0.0) as usize).min(w);
    let y1 = ((pose.y + r + 1.0).ceil().max(0.0) as usize).min(h);
    let (sin, cos) = pose.angle.sin_cos();
    let shape = SHAPES[object.shape];
    const SUB: [f64; 2] = [0.25, 0.75];
    for py in y0..y1 {
        for px in x0..x1 {
            let mut covered = 0;
            for sy in SUB {
                for sx in SUB {
                    let dx = px as f64 + sx - pose.x;
                    let dy = py as f64 + sy - pose.y;
                    // Into the shape's own frame.
                    let (lx, ly) = (dx * cos + dy * sin, -dx * sin + dy * cos);
                    covered += usize::from(shape.contains(lx, ly, r));
                }
            }
            if covered == 0 {
                continue;
            }
            let alpha = covered as f64 / 4.0;
            // Light from the top left: a gentle shading, as on real objects.
            let dx = px as f64 + 0.5 - pose.x;
            let dy = py as f64 + 0.5 - pose.y;
            let shade = 1.0 - 0.06 * (dx + dy) / (r * 1.4);
            let at = (py * w + px) * 3;
            for c in 0..3 {
                let paint = (object.paint[c] * shade).clamp(0.0, 255.0);
                let under = f64::from(rgb[at + c]);
                rgb[at + c] = (under + (paint - under) * alpha).round() as u8;
            }
            if covered >= 2 {
                owner[py * w + px] = object.track as u16;
            }
        }
    }
}

/// Per-frame sensor noise, drawn from its own stream so frames are
/// independent of one another and of the order they are rendered in.
fn add_sensor_noise(rgb: &mut [u8], seed: u64, video: usize, frame: usize) {
    let mut rng = Pcg::new(seed ^ 0x0015_e5e0, ((video as u64) << 32) | frame as u64);
    for value in rgb.iter_mut() {
        let noise = (rng.next_u32() % 9) as i16 - 4;
        *value = (i16::from(*value) + noise).clamp(0, 255) as u8;
    }
}

/// A muted, textured background with clutter in its own hues, kept away from
/// the vocabulary's saturated colours.
fn paint_background(config: &SynthConfig, rng: &mut Pcg) -> Vec<u8> {
    let (w, h) = (config.width as usize, config.height as usize);
    let base = [
        rng.range(70.0, 160.0),
        rng.range(70.0, 160.0),
        rng.range(70.0, 160.0),
    ];
    let mean = (base[0] + base[1] + base[2]) / 3.0;
    // Pull towards grey: low saturation.
    let base = base.map(|c| mean + (c - mean) * 0.35);
    // Value noise: a coarse random grid, bilinearly interpolated, in octaves.
    let mut field = vec![0f64; w * h];
    for (cells, weight) in [(4usize, 28.0), (11, 14.0), (29, 7.0)] {
        let gw = cells * w / w.min(h) + 2;
        let gh = cells * h / w.min(h) + 2;
        let grid: Vec<f64> = (0..gw * gh).map(|_| rng.range(-1.0, 1.0)).collect();
        for y in 0..h {
            let gy = y as f64 / h as f64 * (gh - 2) as f64;
            let (iy, fy) = (gy as usize, gy.fract());
            for x in 0..w {
                let gx = x as f64 / w as f64 * (gw - 2) as f64;
                let (ix, fx) = (gx as usize, gx.fract());
                let g = |i: usize, j: usize| grid[j * gw + i];
                let top = g(ix, iy) * (1.0 - fx) + g(ix + 1, iy) * fx;
                let bottom = g(ix, iy + 1) * (1.0 - fx) + g(ix + 1, iy + 1) * fx;
                field[y * w + x] += weight * (top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    let mut rgb = vec![0u8; w * h * 3];
    for (i, f) in field.iter().enumerate() {
        for c in 0..3 {
            rgb[i * 3 + c] = (base[c] + f).clamp(0.0, 255.0) as u8;
        }
    }
    // Clutter: lines and elongated bars in lighter and darker tints.
    let scale = w.min(h) as f64;
    for _ in 0..(20 + rng.below(30)) {
        let tint = rng.range(-45.0, 45.0);
        let colour = base.map(|c| (c + tint).clamp(0.0, 255.0));
        let (cx, cy) = (rng.range(0.0, w as f64), rng.range(0.0, h as f64));
        let length = rng.range(0.05, 0.3) * scale;
        let thickness = rng.range(1.0, 0.015 * scale + 1.5);
        let angle = rng.range(0.0, std::f64::consts::PI);
        let (sin, cos) = angle.sin_cos();
        let reach = (length / 2.0 + thickness) as isize + 1;
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                let (px, py) = (cx as isize + dx, cy as isize + dy);
                if px < 0 || py < 0 || px >= w as isize || py >= h as isize {
                    continue;
                }
                let (fx, fy) = (px as f64 + 0.5 - cx, py as f64 + 0.5 - cy);
                let along = fx * cos + fy * sin;
                let across = -fx * sin + fy * cos;
                if along.abs() <= length / 2.0 && across.abs() <= thickness / 2.0 {
                    let at = (py as usize * w + px as usize) * 3;
                    for c in 0..3 {
                        rgb[at + c] = colour[c] as u8;
                    }
                }
            }
        }
    }
    rgb
}

/// Smooth motion: velocity relaxes towards a target that changes now and
/// then (speed changes), heading drifts, objects either bounce off the
/// borders or leave for good.
fn simulate(
    config: &SynthConfig,
    rng: &mut Pcg,
    start: usize,
    position: (f64, f64),
    velocity: (f64, f64),
    radius: f64,
    bounce: bool,
) -> Vec<Option<Pose>> {
    let (w, h) = (f64::from(config.width), f64::from(config.height));
    let frames = config.frames as usize;
    let mut poses = vec![None; frames];
    let (mut x, mut y) = position;
    let (mut vx, mut vy) = velocity;
    let (mut tx, mut ty) = velocity;
    let mut angle = rng.range(0.0, std::f64::consts::TAU);
    let spin = rng.range(-0.04, 0.04);
    let mut entered = x >= 0.0 && x <= w && y >= 0.0 && y <= h;
    for (frame, pose) in poses.iter_mut().enumerate().skip(start) {
        let inside = x > -radius && x < w + radius && y > -radius && y < h + radius;
        if inside {
            *pose = Some(Pose { x, y, angle });
            entered = true;
        } else if (entered && !bounce) || (!entered && frame > start + 4 * config.fps as usize) {
            // Gone for good, or never going to arrive.
            break;
        }
        if rng.chance(0.03) {
            let speed = (tx * tx + ty * ty).sqrt().max(0.05) * rng.range(0.3, 2.5);
            let heading = ty.atan2(tx) + rng.normal() * 0.6;
            let cap = 0.02 * w.min(h);
            let speed = speed.min(cap);
            tx = speed * heading.cos();
            ty = speed * heading.sin();
        }
        vx += (tx - vx) * 0.08 + rng.normal() * 0.02;
        vy += (ty - vy) * 0.08 + rng.normal() * 0.02;
        if bounce {
            if (x < radius && vx < 0.0) || (x > w - radius && vx > 0.0) {
                vx = -vx;
                tx = -tx;
            }
            if (y < radius && vy < 0.0) || (y > h - radius && vy > 0.0) {
                vy = -vy;
                ty = -ty;
            }
        }
        x += vx;
        y += vy;
        angle += spin;
    }
    poses
}

/// Appends an object with a slightly varied paint of `colour`.
fn add_object(
    objects: &mut Vec<Object>,
    (shape, colour): (usize, usize),
    radius: f64,
    depth: f64,
    poses: Vec<Option<Pose>>,
    rng: &mut Pcg,
) {
    let base = COLOURS[colour].1;
    let paint = base.map(|c| (f64::from(c) + rng.range(-12.0, 12.0)).clamp(0.0, 255.0));
    objects.push(Object {
        track: objects.len(),
        shape,
        colour,
        paint,
        radius,
        depth,
        poses,
    });
}

fn plan_objects(config: &SynthConfig, rng: &mut Pcg) -> Vec<Object> {
    let (w, h) = (f64::from(config.width), f64::from(config.height));
    let scale = w.min(h);
    let frames = config.frames as usize;
    let speed_unit = scale / 360.0;
    let mut objects: Vec<Object> = Vec::new();
    let wanderers = 3 + rng.below(4);
    for _ in 0..wanderers {
        let (shape, colour) = (rng.below(SHAPES.len()), rng.below(COLOURS.len()));
        let radius = rng.range(0.035, 0.11) * scale;
        let speed = rng.range(0.4, 3.5) * speed_unit;
        let heading = rng.range(0.0, std::f64::consts::TAU);
        let from_edge = rng.chance(0.4);
        let start = if from_edge {
            rng.below(frames * 2 / 3 + 1)
        } else {
            0
        };
        let (position, heading) = if from_edge {
            // Just outside a random border, heading in.
            match rng.below(4) {
                0 => ((-radius, rng.range(0.1, 0.9) * h), rng.range(-0.6, 0.6)),
                1 => (
                    (w + radius, rng.range(0.1, 0.9) * h),
                    std::f64::consts::PI + rng.range(-0.6, 0.6),
                ),
                2 => (
                    (rng.range(0.1, 0.9) * w, -radius),
                    std::f64::consts::FRAC_PI_2 + rng.range(-0.6, 0.6),
                ),
                _ => (
                    (rng.range(0.1, 0.9) * w, h + radius),
                    -std::f64::consts::FRAC_PI_2 + rng.range(-0.6, 0.6),
                ),
            }
        } else {
            (
                (rng.range(radius, w - radius), rng.range(radius, h - radius)),
                heading,
            )
        };
        let velocity = (
            speed.max(speed_unit) * heading.cos(),
            speed.max(speed_unit) * heading.sin(),
        );
        let bounce = !from_edge && rng.chance(0.6);
        let poses = simulate(config, rng, start, position, velocity, radius, bounce);
        let depth = rng.unit();
        add_object(
            &mut objects,
            (shape, colour),
            radius,
            depth,
            poses.clone(),
            rng,
        );

        // Sometimes a twin of the same kind moves alongside.
        if rng.chance(config.challenge.twin_chance) {
            let gap = radius * rng.range(2.3, 3.2);
            let (ox, oy) = (-velocity.1, velocity.0);
            let norm = (ox * ox + oy * oy).sqrt().max(1e-9);
            let (ox, oy) = (ox / norm * gap, oy / norm * gap);
            let twin: Vec<Option<Pose>> = poses
                .iter()
                .map(|p| {
                    p.map(|p| Pose {
                        x: p.x + ox,
                        y: p.y + oy,
                        angle: p.angle + 0.3,
                    })
                    .filter(|p| {
                        p.x > -radius && p.x < w + radius && p.y > -radius && p.y < h + radius
                    })
                })
                .collect();
            add_object(
                &mut objects,
                (shape, colour),
                radius,
                depth + 0.001,
                twin,
                rng,
            );
        }
    }

    // A full occlusion in most videos, unless the challenge sets how many.
    if frames >= 20 {
        match config.challenge.occlusions {
            None => {
                if rng.chance(0.75) {
                    add_occlusion(&mut objects, config, rng);
                }
            }
            Some(count) => {
                for _ in 0..count {
                    add_occlusion(&mut objects, config, rng);
                }
            }
        }
    }
    for _ in 0..config.challenge.crossings {
        add_crossing(&mut objects, config, rng);
    }
    objects
}

/// A straight path through `centre` at frame `t0`, slowly spinning; absent
/// while the object is wholly outside the frame.
fn straight_path(
    config: &SynthConfig,
    centre: (f64, f64),
    velocity: (f64, f64),
    t0: f64,
    spin: f64,
    radius: f64,
) -> Vec<Option<Pose>> {
    let (w, h) = (f64::from(config.width), f64::from(config.height));
    (0..config.frames as usize)
        .map(|f| {
            let dt = f as f64 - t0;
            let pose = Pose {
                x: centre.0 + velocity.0 * dt,
                y: centre.1 + velocity.1 * dt,
                angle: spin * f as f64,
            };
            (pose.x > -radius && pose.x < w + radius && pose.y > -radius && pose.y < h + radius)
                .then_some(pose)
        })
        .collect()
}

/// A slow object, and a larger one passing right over it so that it
/// disappears completely for several frames.
fn add_occlusion(objects: &mut Vec<Object>, config: &SynthConfig, rng: &mut Pcg) {
    let (w, h) = (f64::from(config.width), f64::from(config.height));
    let scale = w.min(h);
    let speed_unit = scale / 360.0;
    let small = rng.range(0.03, 0.055) * scale;
    let (hidden_shape, hidden_colour) = (rng.below(SHAPES.len()), rng.below(COLOURS.len()));
    let occluder_shape = if rng.chance(0.5) { 0 } else { 1 };
    let occluder_colour = rng.below(COLOURS.len());
    let occluder_radius = (small * rng.range(2.6, 3.4)).min(0.2 * scale);
    let cover = SHAPES[occluder_shape].inner_radius(occluder_radius) - small;
    let hidden_frames = rng.range(4.0, 10.0);
    let relative_speed = 2.0 * cover / hidden_frames;
    let t0 = rng.range(0.3, 0.7) * f64::from(config.frames);
    let centre = (rng.range(0.3, 0.7) * w, rng.range(0.3, 0.7) * h);
    let drift = (
        rng.range(-0.3, 0.3) * speed_unit,
        rng.range(-0.3, 0.3) * speed_unit,
    );
    let heading = rng.range(0.0, std::f64::consts::TAU);
    let (rx, ry) = (
        relative_speed * heading.cos(),
        relative_speed * heading.sin(),
    );
    let spin = rng.range(-0.03, 0.03);
    let hidden = straight_path(config, centre, drift, t0, spin, small);
    let occluder = straight_path(
        config,
        centre,
        (drift.0 + rx, drift.1 + ry),
        t0,
        spin,
        occluder_radius,
    );
    add_object(
        objects,
        (hidden_shape, hidden_colour),
        small,
        0.0,
        hidden,
        rng,
    );
    add_object(
        objects,
        (occluder_shape, occluder_colour),
        occluder_radius,
        2.0,
        occluder,
        rng,
    );
}

/// Two look-alikes — same shape, same colour, nearly the same size — whose
/// straight paths cross: at the crossing one passes over the other, partly
/// or wholly covering it, and only motion tells them apart afterwards.
fn add_crossing(objects: &mut Vec<Object>, config: &SynthConfig, rng: &mut Pcg) {
    let (w, h) = (f64::from(config.width), f64::from(config.height));
    let scale = w.min(h);
    let speed_unit = scale / 360.0;
    let kind = (rng.below(SHAPES.len()), rng.below(COLOURS.len()));
    let radius = rng.range(0.04, 0.08) * scale;
    let other_radius = radius * rng.range(0.9, 1.1);
    let t0 = rng.range(0.25, 0.75) * f64::from(config.frames);
    let centre = (rng.range(0.3, 0.7) * w, rng.range(0.3, 0.7) * h);
    let heading = rng.range(0.0, std::f64::consts::TAU);
    // Never parallel, never head-on: the paths cross at 35–145 degrees.
    let other_heading = heading + rng.range(0.6, 2.5) * if rng.chance(0.5) { 1.0 } else { -1.0 };
    let (speed, other_speed) = (
        rng.range(1.0, 3.0) * speed_unit,
        rng.range(1.0, 3.0) * speed_unit,
    );
    // How far apart their centres pass, as a share of the radius.
    let miss = rng.range(0.0, 0.6) * radius;
    let miss_angle = rng.range(0.0, std::f64::consts::TAU);
    let other_centre = (
        centre.0 + miss * miss_angle.cos(),
        centre.1 + miss * miss_angle.sin(),
    );
    let first = straight_path(
        config,
        centre,
        (speed * heading.cos(), speed * heading.sin()),
        t0,
        rng.range(-0.03, 0.03),
        radius,
    );
    let second = straight_path(
        config,
        other_centre,
        (
            other_speed * other_heading.cos(),
            other_speed * other_heading.sin(),
        ),
        t0,
        rng.range(-0.03, 0.03),
        other_radius,
    );
    let depth = rng.range(0.0, 1.0);
    add_object(objects, kind, radius, depth, first, rng);
    add_object(objects, kind, other_radius, depth + 0.5, second, rng);
}

/// What `write_dataset` made.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub annotations_path: PathBuf,
    pub videos: usize,
    pub frames: usize,
    pub annotations: usize,
    pub tracks: usize,
}

/// What to write for each video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    /// `videos/NAME.mp4`.
    pub video: bool,
    /// `frames/NAME/000000.jpg`, …, as TAO ships its videos.
    pub frames: bool,
}

/// Renders `videos` videos into `out` with their ground truth in
/// `out/annotations.json` (TAO format); `on_frame` is called after each frame.
pub fn write_dataset(
    out: &Path,
    videos: usize,
    config: &SynthConfig,
    outputs: Outputs,
    mut on_frame: impl FnMut(),
) -> Result<DatasetSummary> {
    config.validate()?;
    let mut dataset = tao::TaoDataset {
        categories: categories(),
        ..Default::default()
    };
    std::fs::create_dir_all(out).map_err(|e| TrackerError::io(out, e))?;
    let mut track_base = 0u64;
    for index in 0..videos {
        let world = VideoWorld::new(config, index)?;
        let name = world.name();
        let video_id = index as u64 + 1;
        dataset.videos.push(tao::Video {
            id: video_id,
            name: name.clone(),
            width: config.width,
            height: config.height,
            neg_category_ids: Vec::new(),
            not_exhaustive_category_ids: Vec::new(),
            fps: Some(config.fps),
        });
        let mut writer = if outputs.video {
            let dir = out.join("videos");
            std::fs::create_dir_all(&dir).map_err(|e| TrackerError::io(&dir, e))?;
            let options = WriterOptions {
                fps: config.fps,
                keyframe_interval: Some(config.fps.round().max(1.0) as u32),
                ..WriterOptions::default()
            };
            Some(VideoWriter::create(
                &dir.join(format!("{name}.mp4")),
                config.width,
                config.height,
                &options,
            )?)
        } else {
            None
        };
        let frame_dir = out.join("frames").join(&name);
        if outputs.frames {
            std::fs::create_dir_all(&frame_dir).map_err(|e| TrackerError::io(&frame_dir, e))?;
        }
        let mut seen_tracks = vec![false; world.tracks()];
        for frame in 0..config.frames as usize {
            let (rgb, truths) = world.render(frame);
            let image_id = dataset.images.len() as u64 + 1;
            let file_name = format!("frames/{name}/{frame:06}.jpg");
            if outputs.frames {
                image::write_image(&out.join(&file_name), &rgb, config.width, config.height)?;
            }
            if let Some(writer) = writer.as_mut() {
                writer.write(&rgb)?;
            }
            dataset.images.push(tao::Image {
                id: image_id,
                video_id,
                frame_index: frame as u64,
                file_name,
                width: config.width,
                height: config.height,
            });
            for truth in truths {
                seen_tracks[truth.track] = true;
                dataset.annotations.push(tao::Annotation {
                    id: dataset.annotations.len() as u64 + 1,
                    image_id,
                    video_id,
                    track_id: track_base + truth.track as u64 + 1,
                    category_id: truth.category_id,
                    bbox: truth.bbox,
                    area: truth.bbox[2] * truth.bbox[3],
                    iscrowd: 0,
                    visibility: Some((truth.visibility * 1000.0).round() / 1000.0),
                });
            }
            on_frame();
        }
        if let Some(writer) = writer {
            writer.finish()?;
        }
        for (track, seen) in seen_tracks.iter().enumerate() {
            if *seen {
                dataset.tracks.push(tao::Track {
                    id: track_base + track as u64 + 1,
                    category_id: world.category_of(track),
                    video_id,
                });
            }
        }
        track_base += world.tracks() as u64;
    }
    let annotations_path = out.join("annotations.json");
    dataset.write(&annotations_path)?;
    Ok(DatasetSummary {
        annotations_path,
        videos,
        frames: dataset.images.len(),
        annotations: dataset.annotations.len(),
        tracks: dataset.tracks.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_their_areas() {
        for shape in SHAPES {
            let r = 40.0;
            let mut inside = 0usize;
            let step = 0.25;
            let mut y = -r;
            while y < r {
                let mut x = -r;
                while x < r {
                    inside += usize::from(shape.contains(x + step / 2.0, y + step / 2.0, r));
                    x += step;
                }
                y += step;
            }
            let measured = inside as f64 * step * step;
            let want = shape.area(r);
            assert!(
                (measured - want).abs() / want < 0.01,
                "{shape:?}: {measured} vs {want}"
            );
            assert!(shape.contains(0.0, 0.0, r));
            let inner = shape.inner_radius(r) * 0.99;
            for k in 0..36 {
                let a = k as f64 * 10f64.to_radians();
                assert!(
                    shape.contains(inner * a.cos(), inner * a.sin(), r),
                    "{shape:?} at {k}"
                );
            }
        }
    }

    #[test]
    fn vocabulary_has_every_colour_and_shape() {
        let names: Vec<String> = categories().into_iter().map(|c| c.name).collect();
        assert_eq!(names.len(), 24);
        assert_eq!(names[0], "red circle");
        assert!(names.contains(&"black star".to_string()));
        assert_eq!(category_id(5, 3), 24);
    }
}
