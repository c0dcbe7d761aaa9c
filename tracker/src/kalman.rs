//! The constant-velocity Kalman filter of SORT / ByteTrack on a box's centre,
//! aspect ratio and height (`xyah`), with ByteTrack's noise model: standard
//! deviations proportional to the box height (1/20 for positions, 1/160 for
//! velocities).
//!
//! ByteTrack writes it as one 8-dimensional filter, but its motion, noise and
//! measurement matrices pair each coordinate only with its own velocity, so
//! the covariance stays block-diagonal: four independent 2-state filters
//! compute exactly the same numbers with 2×2 algebra.

const POSITION_WEIGHT: f64 = 1.0 / 20.0;
const VELOCITY_WEIGHT: f64 = 1.0 / 160.0;

/// One coordinate and its velocity, with their 2×2 covariance.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    value: f64,
    velocity: f64,
    /// Variance of the value, their covariance, variance of the velocity.
    var: f64,
    cov: f64,
    var_velocity: f64,
}

impl Axis {
    fn predict(&mut self, std_value: f64, std_velocity: f64) {
        self.value += self.velocity;
        let (a, b, c) = (self.var, self.cov, self.var_velocity);
        self.var = a + 2.0 * b + c + std_value * std_value;
        self.cov = b + c;
        self.var_velocity = c + std_velocity * std_velocity;
    }

    fn update(&mut self, measured: f64, std_measurement: f64) {
        let (a, b, c) = (self.var, self.cov, self.var_velocity);
        let s = a + std_measurement * std_measurement;
        let innovation = measured - self.value;
        self.value += a / s * innovation;
        self.velocity += b / s * innovation;
        self.var = a - a * a / s;
        self.cov = b - a * b / s;
        self.var_velocity = c - b * b / s;
    }
}

/// A box's motion state: centre x, centre y, aspect (w / h), height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxFilter {
    axes: [Axis; 4],
}

/// `[x0, y0, x1, y1]` → `[cx, cy, w / h, h]`.
pub fn to_xyah(b: [f64; 4]) -> [f64; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    [b[0] + w / 2.0, b[1] + h / 2.0, w / h.max(1e-6), h]
}

/// `[cx, cy, w / h, h]` → `[x0, y0, x1, y1]`.
pub fn from_xyah(s: [f64; 4]) -> [f64; 4] {
    let w = s[2] * s[3];
    [
        s[0] - w / 2.0,
        s[1] - s[3] / 2.0,
        s[0] + w / 2.0,
        s[1] + s[3] / 2.0,
    ]
}

impl BoxFilter {
    /// A new track at a measured box, with zero velocity and the initial
    /// uncertainty ByteTrack uses (twice the position noise, ten times the
    /// velocity noise).
    pub fn new(corners: [f64; 4]) -> Self {
        let m = to_xyah(corners);
        let h = m[3];
        let position = [
            2.0 * POSITION_WEIGHT * h,
            2.0 * POSITION_WEIGHT * h,
            1e-2,
            2.0 * POSITION_WEIGHT * h,
        ];
        let velocity = [
            10.0 * VELOCITY_WEIGHT * h,
            10.0 * VELOCITY_WEIGHT * h,
            1e-5,
            10.0 * VELOCITY_WEIGHT * h,
        ];
        BoxFilter {
            axes: std::array::from_fn(|i| Axis {
                value: m[i],
                velocity: 0.0,
                var: position[i] * position[i],
                cov: 0.0,
                var_velocity: velocity[i] * velocity[i],
            }),
        }
    }

    /// One frame ahead.
    pub fn predict(&mut self) {
        let h = self.axes[3].value;
        let position = [
            POSITION_WEIGHT * h,
            POSITION_WEIGHT * h,
            1e-2,
            POSITION_WEIGHT * h,
        ];
        let velocity = [
            VELOCITY_WEIGHT * h,
            VELOCITY_WEIGHT * h,
            1e-5,
            VELOCITY_WEIGHT * h,
        ];
        for (i, axis) in self.axes.iter_mut().enumerate() {
            axis.predict(position[i], velocity[i]);
        }
    }

    /// Corrects the state with a measured box.
    pub fn update(&mut self, corners: [f64; 4]) {
        let m = to_xyah(corners);
        let h = self.axes[3].value;
        let noise = [
            POSITION_WEIGHT * h,
            POSITION_WEIGHT * h,
            1e-1,
            POSITION_WEIGHT * h,
        ];
        for (i, axis) in self.axes.iter_mut().enumerate() {
            axis.update(m[i], noise[i]);
        }
    }

    /// The state as `[x0, y0, x1, y1]`.
    pub fn corners(&self) -> [f64; 4] {
        from_xyah(std::array::from_fn(|i| self.axes[i].value))
    }

    /// The state as `[cx, cy, w / h, h]`.
    pub fn xyah(&self) -> [f64; 4] {
        std::array::from_fn(|i| self.axes[i].value)
    }

    /// Velocity of `[cx, cy, w / h, h]` per frame.
    pub fn velocity(&self) -> [f64; 4] {
        std::array::from_fn(|i| self.axes[i].velocity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_conversions_invert() {
        let b = [10.0, 20.0, 50.0, 100.0];
        let s = to_xyah(b);
        assert_eq!(s, [30.0, 60.0, 0.5, 80.0]);
        assert_eq!(from_xyah(s), b);
    }

    /// The same numbers as ByteTrack's 8-dimensional filter
    /// (`yolox/tracker/kalman_filter.py`), written out with full matrices.
    #[test]
    fn matches_the_full_eight_state_filter() {
        fn full_step(mean: &mut [f64; 8], cov: &mut [[f64; 8]; 8], z: Option<[f64; 4]>) {
            // predict
            let h = mean[3];
            let q: [f64; 8] = [
                POSITION_WEIGHT * h,
                POSITION_WEIGHT * h,
                1e-2,
                POSITION_WEIGHT * h,
                VELOCITY_WEIGHT * h,
                VELOCITY_WEIGHT * h,
                1e-5,
                VELOCITY_WEIGHT * h,
            ];
            let mut f = [[0.0; 8]; 8];
            for (i, row) in f.iter_mut().enumerate() {
                row[i] = 1.0;
                if i < 4 {
                    row[4 + i] = 1.0;
                }
            }
            let mut next = [0.0; 8];
            for i in 0..8 {
                next[i] = (0..8).map(|j| f[i][j] * mean[j]).sum();
            }
            *mean = next;
            let mut fp = [[0.0; 8]; 8];
            for i in 0..8 {
                for j in 0..8 {
                    fp[i][j] = (0..8).map(|k| f[i][k] * cov[k][j]).sum();
                }
            }
            for i in 0..8 {
                for j in 0..8 {
                    cov[i][j] = (0..8).map(|k| fp[i][k] * f[j][k]).sum::<f64>()
                        + if i == j { q[i] * q[i] } else { 0.0 };
                }
            }
            let Some(z) = z else { return };
            // update (H = [I 0]); S is diagonal here because cov's 4×4 block is.
            let h = mean[3];
            let r = [
                POSITION_WEIGHT * h,
                POSITION_WEIGHT * h,
                1e-1,
                POSITION_WEIGHT * h,
            ];
            let s: [f64; 4] = std::array::from_fn(|i| cov[i][i] + r[i] * r[i]);
            let mut gain = [[0.0; 4]; 8];
            for i in 0..8 {
                for j in 0..4 {
                    gain[i][j] = cov[i][j] / s[j];
                }
            }
            for i in 0..8 {
                mean[i] += (0..4).map(|j| gain[i][j] * (z[j] - next[j])).sum::<f64>();
            }
            let old = *cov;
            for i in 0..8 {
                for j in 0..8 {
                    cov[i][j] =
                        old[i][j] - (0..4).map(|k| gain[i][k] * s[k] * gain[j][k]).sum::<f64>();
                }
            }
        }

        let boxes = [
            [100.0, 50.0, 140.0, 130.0],
            [104.0, 53.0, 145.0, 134.0],
            [109.0, 55.0, 149.0, 137.0],
            [0.0; 4],
            [120.0, 62.0, 161.0, 144.0],
        ];
        let mut ours = BoxFilter::new(boxes[0]);
        let m = to_xyah(boxes[0]);
        let h = m[3];
        let mut mean = [m[0], m[1], m[2], m[3], 0.0, 0.0, 0.0, 0.0];
        let std = [
            2.0 * POSITION_WEIGHT * h,
            2.0 * POSITION_WEIGHT * h,
            1e-2,
            2.0 * POSITION_WEIGHT * h,
            10.0 * VELOCITY_WEIGHT * h,
            10.0 * VELOCITY_WEIGHT * h,
            1e-5,
            10.0 * VELOCITY_WEIGHT * h,
        ];
        let mut cov = [[0.0; 8]; 8];
        for i in 0..8 {
            cov[i][i] = std[i] * std[i];
        }
        for (t, b) in boxes.iter().enumerate().skip(1) {
            // Frame 3 has no detection: predict only.
            let z = (t != 3).then(|| to_xyah(*b));
            full_step(&mut mean, &mut cov, z);
            ours.predict();
            if t != 3 {
                ours.update(*b);
            }
            for i in 0..4 {
                assert!(
                    (ours.xyah()[i] - mean[i]).abs() < 1e-9,
                    "frame {t} value {i}"
                );
                assert!(
                    (ours.velocity()[i] - mean[4 + i]).abs() < 1e-9,
                    "frame {t} velocity {i}"
                );
                assert!((ours.axes[i].var - cov[i][i]).abs() < 1e-9);
                assert!((ours.axes[i].cov - cov[i][4 + i]).abs() < 1e-9);
                assert!((ours.axes[i].var_velocity - cov[4 + i][4 + i]).abs() < 1e-9);
            }
        }
        // A box moving steadily is extrapolated through a gap.
        let mut steady = BoxFilter::new([0.0, 0.0, 20.0, 40.0]);
        for t in 1..30 {
            steady.predict();
            let x = 5.0 * t as f64;
            steady.update([x, 0.0, x + 20.0, 40.0]);
        }
        steady.predict();
        assert!(
            (steady.corners()[0] - 150.0).abs() < 0.5,
            "{:?}",
            steady.corners()
        );
    }
}
