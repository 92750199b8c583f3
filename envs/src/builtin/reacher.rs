//! `reacher`: a two-link planar arm (no gravity) reaching a target, like Gymnasium's Reacher.
//!
//! The target is visible only in `pixels`; `proprio` holds the joints alone, so the modalities
//! complement each other. Emits single frames and never ends an episode: the registry adds frame
//! stacking, the 50-step time limit and episode statistics.

use std::f64::consts::PI;

use crate::state::{EnvRng, EnvState};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::render::Viewport;
use crate::{
    validate_action, Action, ActionSpace, DType, Env, EnvError, Info, ModalityData, ModalitySpec, Obs, ObsSpace, Step,
};

pub const NAME: &str = "reacher";

// The arm: Gymnasium Reacher's link lengths (m), so that distances (and rewards) have its scale;
// each link a uniform rod of 0.2 kg (centre of mass at mid-length, inertia m l^2 / 12); each
// joint with a motor whose rotor adds 0.01 kg m^2 of inertia (MuJoCo's "armature") and viscous
// damping. At full torque (1 N m) the joints accelerate at 60 to 90 rad/s^2, so the arm reaches any
// target well within the 50 steps (1 s) of an episode.
const L1: f64 = 0.1;
const L2: f64 = 0.11;
const M1: f64 = 0.2;
const M2: f64 = 0.2;
const ARMATURE: f64 = 0.01;
/// N m s / rad: alone it would limit the joint speed under full torque to 1 / 0.1 = 10 rad/s.
const DAMPING: f64 = 0.1;
/// Joint speeds are clamped to [-10, 10] rad/s (the `proprio` bounds), which damping alone
/// nearly enforces, so the clamp only trims the coupling terms' excess.
const MAX_JOINT_SPEED: f64 = 10.0;
/// Seconds per env step (Gymnasium Reacher's), integrated by semi-implicit Euler in substeps.
const DT: f64 = 0.02;
const SUBSTEPS: usize = 4;

// Rendering: the arm reaches 0.21 m; the window adds room for the strokes' width.
const HALF_SPAN: f64 = 0.24;
const LINK_RADIUS: f64 = 0.01;
const TARGET_RADIUS: f64 = 0.015;
const ARM_VALUE: u8 = 255;
const TARGET_VALUE: u8 = 128;

/// The reacher's sensors and reward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReacherConfig {
    /// Observe `pixels`: a grey image_size x image_size top view (arm 255, target 128).
    pub pixels: bool,
    /// Observe `proprio` = (cos q1, sin q1, cos q2, sin q2, qd1, qd2): the joints, not the target.
    pub proprio: bool,
    /// Side of the square image in pixels, 16 to 512.
    pub image_size: usize,
    /// Weight of the control cost |u|^2 in the reward (Gymnasium Reacher: 1).
    pub ctrl_cost: f64,
}

impl Default for ReacherConfig {
    fn default() -> Self {
        Self { pixels: true, proprio: true, image_size: 64, ctrl_cost: 1.0 }
    }
}

/// The two-link arm. Joint angles: q1 of the first link from the world x axis, q2 of the second
/// link relative to the first.
pub struct Reacher {
    config: ReacherConfig,
    obs_space: ObsSpace,
    action_space: ActionSpace,
    view: Viewport,
    link_radius: f64,
    target_radius: f64,
    rng: EnvRng,
    q: [f64; 2],
    qd: [f64; 2],
    target: (f64, f64),
    needs_reset: bool,
}

impl Reacher {
    /// Builds the environment. Its random stream starts from seed 0 until `reset(Some(seed))`.
    pub fn new(config: ReacherConfig) -> Result<Self, EnvError> {
        let invalid = |param: &str, reason: String| EnvError::InvalidParam {
            env: NAME.to_string(),
            param: param.to_string(),
            reason,
        };
        if !(16..=512).contains(&config.image_size) {
            return Err(invalid("image_size", format!("must be in 16..=512, got {}", config.image_size)));
        }
        if !(config.ctrl_cost.is_finite() && config.ctrl_cost >= 0.0) {
            return Err(invalid("ctrl_cost", format!("must be finite and >= 0, got {}", config.ctrl_cost)));
        }
        if !(config.pixels || config.proprio) {
            return Err(invalid("pixels", "both modalities (pixels, proprio) are off; enable at least one".into()));
        }
        let s = config.image_size;
        let mut modalities = Vec::new();
        if config.pixels {
            modalities.push(("pixels", ModalitySpec::uniform(&[1, s, s], DType::U8, 0.0, 255.0)));
        }
        if config.proprio {
            let v = MAX_JOINT_SPEED as f32;
            let bounds = [(-1.0, 1.0), (-1.0, 1.0), (-1.0, 1.0), (-1.0, 1.0), (-v, v), (-v, v)];
            modalities.push(("proprio", ModalitySpec::vector(&bounds)));
        }
        let view = Viewport::new(-HALF_SPAN, HALF_SPAN, -HALF_SPAN, HALF_SPAN, s, s);
        // On small images, strokes thinner than 1.5 pixels could fall between pixel centres.
        let min_radius = 0.75 * view.pixel_size();
        Ok(Self {
            obs_space: ObsSpace::new(modalities)?,
            action_space: ActionSpace::Box { low: vec![-1.0; 2], high: vec![1.0; 2] },
            link_radius: LINK_RADIUS.max(min_radius),
            target_radius: TARGET_RADIUS.max(min_radius),
            view,
            config,
            rng: EnvRng::seed_from_u64(0),
            q: [0.0; 2],
            qd: [0.0; 2],
            target: (0.0, 0.0),
            needs_reset: true,
        })
    }

    /// (elbow, fingertip) positions in the plane.
    fn joints(&self) -> ((f64, f64), (f64, f64)) {
        let (s1, c1) = self.q[0].sin_cos();
        let (s12, c12) = (self.q[0] + self.q[1]).sin_cos();
        let elbow = (L1 * c1, L1 * s1);
        (elbow, (elbow.0 + L2 * c12, elbow.1 + L2 * s12))
    }

    fn distance_to_target(&self) -> f64 {
        let (_, tip) = self.joints();
        (tip.0 - self.target.0).hypot(tip.1 - self.target.1)
    }

    /// Modalities in the space's (sorted) order: pixels, proprio.
    fn observe(&self) -> Obs {
        let mut data = Vec::with_capacity(2);
        if self.config.pixels {
            let mut img = vec![0u8; self.view.numel()];
            let (elbow, tip) = self.joints();
            self.view.fill_capsule(&mut img, (0.0, 0.0), elbow, self.link_radius, ARM_VALUE);
            self.view.fill_capsule(&mut img, elbow, tip, self.link_radius, ARM_VALUE);
            // Drawn last so that the arm never hides the target, which no other sensor sees.
            self.view.fill_disc(&mut img, self.target, self.target_radius, TARGET_VALUE);
            data.push(ModalityData::U8(img));
        }
        if self.config.proprio {
            let [q1, q2] = self.q;
            let proprio = [q1.cos(), q1.sin(), q2.cos(), q2.sin(), self.qd[0], self.qd[1]];
            data.push(ModalityData::F32(proprio.iter().map(|&v| v as f32).collect()));
        }
        Obs::new(data)
    }
}

/// Joint-space inertia (m11, m12, m22) at elbow angle `q2`.
fn mass_matrix(q2: f64) -> (f64, f64, f64) {
    let (lc1, lc2) = (L1 / 2.0, L2 / 2.0);
    let (i1, i2) = (M1 * L1 * L1 / 12.0, M2 * L2 * L2 / 12.0);
    let c2 = q2.cos();
    let m22 = i2 + M2 * lc2 * lc2;
    let m12 = m22 + M2 * L1 * lc2 * c2;
    let m11 = i1 + M1 * lc1 * lc1 + m22 + M2 * (L1 * L1 + 2.0 * L1 * lc2 * c2);
    (m11 + ARMATURE, m12, m22 + ARMATURE)
}

/// Joint accelerations from M(q) qdd + C(q, qd) qd + damping qd = tau.
fn accelerations(q2: f64, [qd1, qd2]: [f64; 2], [tau1, tau2]: [f64; 2]) -> [f64; 2] {
    let (m11, m12, m22) = mass_matrix(q2);
    let h = M2 * L1 * (L2 / 2.0) * q2.sin();
    // Coriolis and centrifugal torques.
    let (c1, c2) = (-h * (2.0 * qd1 * qd2 + qd2 * qd2), h * qd1 * qd1);
    let (r1, r2) = (tau1 - c1 - DAMPING * qd1, tau2 - c2 - DAMPING * qd2);
    let det = m11 * m22 - m12 * m12;
    [(m22 * r1 - m12 * r2) / det, (m11 * r2 - m12 * r1) / det]
}

/// `angle` wrapped into [-pi, pi), so that long episodes keep full precision.
fn wrap(angle: f64) -> f64 {
    (angle + PI).rem_euclid(2.0 * PI) - PI
}

impl Env for Reacher {
    fn save_state(&self) -> Option<EnvState> {
        Some(EnvState::new(NAME, &(&self.rng, self.q, self.qd, self.target, self.needs_reset), None))
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        (self.rng, self.q, self.qd, self.target, self.needs_reset) = state.fields(NAME)?;
        Ok(())
    }
    fn name(&self) -> &str {
        NAME
    }

    fn observation_space(&self) -> &ObsSpace {
        &self.obs_space
    }

    fn action_space(&self) -> &ActionSpace {
        &self.action_space
    }

    /// The arm starts near straight along +x (joints U(-0.1, 0.1), speeds U(-0.005, 0.005), as in
    /// Gymnasium); the target is uniform over the reachable annulus |L1 - L2| <= r <= L1 + L2.
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        if let Some(seed) = seed {
            self.rng = EnvRng::seed_from_u64(seed);
        }
        self.q = std::array::from_fn(|_| self.rng.gen_range(-0.1..0.1));
        self.qd = std::array::from_fn(|_| self.rng.gen_range(-0.005..0.005));
        let (r_min, r_max) = ((L1 - L2).abs(), L1 + L2);
        // Uniform over the area: r^2 is uniform.
        let r = self.rng.gen_range(r_min * r_min..r_max * r_max).sqrt();
        let angle: f64 = self.rng.gen_range(-PI..PI);
        self.target = (r * angle.cos(), r * angle.sin());
        self.needs_reset = false;
        Ok((self.observe(), Info::new()))
    }

    /// Torques are clipped to [-1, 1]. Reward after the step: -|fingertip - target| - ctrl_cost |u|^2.
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        validate_action(NAME, &self.action_space, action)?;
        if self.needs_reset {
            return Err(EnvError::NeedsReset { env: NAME.to_string() });
        }
        let Action::Continuous(a) = action else { unreachable!("validate_action accepts only Box actions here") };
        let tau = [f64::from(a[0]).clamp(-1.0, 1.0), f64::from(a[1]).clamp(-1.0, 1.0)];
        let h = DT / SUBSTEPS as f64;
        for _ in 0..SUBSTEPS {
            let qdd = accelerations(self.q[1], self.qd, tau);
            for ((q, qd), qdd) in self.q.iter_mut().zip(&mut self.qd).zip(qdd) {
                *qd = (*qd + h * qdd).clamp(-MAX_JOINT_SPEED, MAX_JOINT_SPEED);
                *q = wrap(*q + h * *qd);
            }
        }
        let reward = -self.distance_to_target() - self.config.ctrl_cost * (tau[0] * tau[0] + tau[1] * tau[1]);
        Ok(Step { obs: self.observe(), reward, terminated: false, truncated: false, info: Info::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Reacher {
        Reacher::new(ReacherConfig::default()).unwrap()
    }

    fn torques(i: usize) -> Action {
        let t = i as f32 * 0.37;
        Action::Continuous(vec![t.sin() * 1.5, (2.0 * t).cos()])
    }

    fn rollout(env: &mut Reacher, seed: Option<u64>) -> Vec<(Obs, f64)> {
        let (obs, _) = env.reset(seed).unwrap();
        let mut out = vec![(obs, 0.0)];
        for i in 0..50 {
            let s = env.step(&torques(i)).unwrap();
            assert!(!s.terminated && !s.truncated);
            out.push((s.obs, s.reward));
        }
        out
    }

    #[test]
    fn same_seed_gives_identical_episodes_and_different_seeds_differ() {
        let (mut a, mut b) = (env(), env());
        let first = rollout(&mut a, Some(3));
        assert_eq!(first, rollout(&mut b, Some(3)));
        assert_eq!(first, rollout(&mut a, Some(3)));
        assert_ne!(first, rollout(&mut b, Some(4)));
        assert_ne!(first, rollout(&mut a, None));
    }

    #[test]
    fn target_is_seen_in_pixels_only() {
        let (mut a, mut b) = (env(), env());
        a.reset(Some(9)).unwrap();
        b.reset(Some(9)).unwrap();
        b.target = (-a.target.0, -a.target.1);
        for i in 0..20 {
            let (sa, sb) = (a.step(&torques(i)).unwrap(), b.step(&torques(i)).unwrap());
            let proprio = a.observation_space().require("proprio").unwrap();
            let pixels = a.observation_space().require("pixels").unwrap();
            assert_eq!(sa.obs.data[proprio], sb.obs.data[proprio]);
            assert_ne!(sa.obs.data[pixels], sb.obs.data[pixels]);
            assert_ne!(sa.reward, sb.reward);
        }
    }

    #[test]
    fn targets_lie_in_the_reachable_annulus() {
        let mut e = env();
        for seed in 0..500 {
            e.reset(Some(seed)).unwrap();
            let r = e.target.0.hypot(e.target.1);
            assert!(((L2 - L1)..=(L1 + L2)).contains(&r), "seed {seed}: r = {r}");
        }
    }

    #[test]
    fn mass_matrix_gives_the_rods_kinetic_energy() {
        // Kinetic energy summed over many point masses along each rod, plus the rotors'.
        let n = 2000;
        for (q, qd) in [([0.3, 1.1], [2.0, -1.5]), ([-2.0, 3.0], [0.7, 4.0]), ([1.0, 0.0], [-3.0, 0.5])] {
            let (s1, c1) = f64::sin_cos(q[0]);
            let (s12, c12) = f64::sin_cos(q[0] + q[1]);
            let mut ke = 0.5 * ARMATURE * (qd[0] * qd[0] + qd[1] * qd[1]);
            for k in 0..n {
                let u = (k as f64 + 0.5) / n as f64;
                // Point on link 1 at u L1, on link 2 at u L2 past the elbow.
                let v1 = (-u * L1 * s1 * qd[0], u * L1 * c1 * qd[0]);
                let w = qd[0] + qd[1];
                let v2 = (-L1 * s1 * qd[0] - u * L2 * s12 * w, L1 * c1 * qd[0] + u * L2 * c12 * w);
                ke += 0.5 * M1 / n as f64 * (v1.0 * v1.0 + v1.1 * v1.1)
                    + 0.5 * M2 / n as f64 * (v2.0 * v2.0 + v2.1 * v2.1);
            }
            let (m11, m12, m22) = mass_matrix(q[1]);
            let model = 0.5 * (m11 * qd[0] * qd[0] + 2.0 * m12 * qd[0] * qd[1] + m22 * qd[1] * qd[1]);
            assert!((ke - model).abs() < 1e-6 * ke, "{ke} vs {model}");
        }
    }

    #[test]
    fn accelerations_balance_power() {
        // d/dt (qd^T M qd / 2) = qd^T M qdd + qd^T (dM/dq2 qd2) qd / 2 must equal the power
        // tau . qd - damping |qd|^2: the Coriolis terms do no work.
        let mut rng = EnvRng::seed_from_u64(0);
        for _ in 0..100 {
            let q2: f64 = rng.gen_range(-PI..PI);
            let qd = [rng.gen_range(-10.0..10.0), rng.gen_range(-10.0..10.0)];
            let tau = [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)];
            let qdd = accelerations(q2, qd, tau);
            let quad = |(a, b, c): (f64, f64, f64), x: [f64; 2], y: [f64; 2]| {
                a * x[0] * y[0] + b * (x[0] * y[1] + x[1] * y[0]) + c * x[1] * y[1]
            };
            let eps = 1e-6;
            let (p, m) = (mass_matrix(q2 + eps), mass_matrix(q2 - eps));
            let dm = ((p.0 - m.0) / (2.0 * eps), (p.1 - m.1) / (2.0 * eps), (p.2 - m.2) / (2.0 * eps));
            let de = quad(mass_matrix(q2), qd, qdd) + 0.5 * qd[1] * quad(dm, qd, qd);
            let power = tau[0] * qd[0] + tau[1] * qd[1] - DAMPING * (qd[0] * qd[0] + qd[1] * qd[1]);
            assert!((de - power).abs() < 1e-6 * (1.0 + power.abs()), "{de} vs {power}");
        }
    }

    #[test]
    fn reward_is_distance_plus_control_cost_and_torques_are_clipped() {
        let mut e = env();
        e.reset(Some(1)).unwrap();
        let mut other = env();
        other.reset(Some(1)).unwrap();
        let s = e.step(&Action::Continuous(vec![3.0, -0.5])).unwrap();
        let clipped = other.step(&Action::Continuous(vec![1.0, -0.5])).unwrap();
        assert_eq!(s, clipped);
        assert!((s.reward - (-e.distance_to_target() - 1.25)).abs() < 1e-12);
    }

    #[test]
    fn full_torque_keeps_observations_in_bounds() {
        let mut e = env();
        e.reset(Some(2)).unwrap();
        for i in 0..2000 {
            let u = if i % 300 < 150 { 1.0 } else { -1.0 };
            let s = e.step(&Action::Continuous(vec![u, -u])).unwrap();
            s.obs.check(e.observation_space()).unwrap();
        }
        assert!(e.qd.iter().all(|v| v.abs() > 5.0), "full torque spins the joints up: {:?}", e.qd);
    }

    #[test]
    fn image_shows_arm_and_target() {
        let mut e = env();
        e.reset(Some(0)).unwrap();
        e.q = [0.0, 0.0];
        e.target = (0.0, 0.15);
        let obs = e.observe();
        let img = obs.data[0].as_u8().unwrap();
        let centre = |value: u8| {
            let px: Vec<usize> = (0..img.len()).filter(|&k| img[k] == value).collect();
            let n = px.len() as f64;
            (px.iter().map(|k| (k % 64) as f64).sum::<f64>() / n, px.iter().map(|k| (k / 64) as f64).sum::<f64>() / n)
        };
        // Arm along +x from the centre (column 31.5) to x = 0.21 (column 59.5): mean near 45.5.
        let (ax, ay) = centre(ARM_VALUE);
        assert!((ax - 45.5).abs() < 1.5 && (ay - 31.5).abs() < 0.5, "arm at ({ax}, {ay})");
        // Target at y = 0.15: row (0.24 - 0.15) / 0.0075 - 0.5 = 11.5.
        let (tx, ty) = centre(TARGET_VALUE);
        assert!((tx - 31.5).abs() < 0.5 && (ty - 11.5).abs() < 0.5, "target at ({tx}, {ty})");
        assert!(img.iter().all(|&p| p == 0 || p == ARM_VALUE || p == TARGET_VALUE));
    }

    #[test]
    fn bad_actions_and_config_are_rejected_with_names() {
        let mut e = env();
        assert!(matches!(e.step(&torques(0)), Err(EnvError::NeedsReset { .. })));
        e.reset(None).unwrap();
        for bad in [
            Action::Continuous(vec![0.0]),
            Action::Continuous(vec![0.0, 0.0, 0.0]),
            Action::Continuous(vec![f32::NAN, 0.0]),
            Action::Continuous(vec![0.0, f32::INFINITY]),
            Action::Discrete(0),
        ] {
            match e.step(&bad) {
                Err(err @ EnvError::InvalidAction { .. }) => assert!(err.to_string().contains(NAME)),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        for (config, param) in [
            (ReacherConfig { image_size: 8, ..Default::default() }, "image_size"),
            (ReacherConfig { ctrl_cost: -1.0, ..Default::default() }, "ctrl_cost"),
            (ReacherConfig { pixels: false, proprio: false, ..Default::default() }, "pixels"),
        ] {
            let err = Reacher::new(config).err().unwrap();
            assert!(matches!(&err, EnvError::InvalidParam { param: p, .. } if p == param));
        }
        assert!(toml::from_str::<ReacherConfig>("target = 1").is_err());
    }
}
