//! `multimodal-pendulum`: Gymnasium's Pendulum-v1 seen through a camera and three microphones
//! (GMC's multimodal pendulum, the M3ixup paper's scenario). See docs/ENVIRONMENTS.md.
//!
//! Emits single frames and never ends an episode by itself: the registry adds frame stacking,
//! the time limit and episode statistics.

use std::f64::consts::PI;

use crate::state::{EnvRng, EnvState};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::render::Viewport;
use crate::{
    validate_action, Action, ActionSpace, DType, Env, EnvError, Info, ModalityData, ModalitySpec, Obs, ObsSpace, Step,
};

pub const NAME: &str = "multimodal-pendulum";

// Pendulum-v1's constants.
const G: f64 = 10.0;
const M: f64 = 1.0;
const L: f64 = 1.0;
const DT: f64 = 0.05;
const MAX_SPEED: f64 = 8.0;

/// Side of the square `pixels` image.
pub const IMAGE_SIZE: usize = 60;
/// The paper renders 100 x 100 pixels over [-2.2, 2.2] and crops the centre 60 x 60, which spans
/// [-1.32, 1.32] at 0.044 world units per pixel; rendering that window directly is identical.
const HALF_SPAN: f64 = 2.2 * IMAGE_SIZE as f64 / 100.0;
const VIEW: Viewport = Viewport::new(-HALF_SPAN, HALF_SPAN, -HALF_SPAN, HALF_SPAN, IMAGE_SIZE, IMAGE_SIZE);
const ROD_RADIUS: f64 = 0.1;
const AXLE_RADIUS: f64 = 0.05;

const SOURCE_HZ: f64 = 440.0;
const SOUND_SPEED: f64 = 20.0;
/// Microphone positions in the (height, left) frame, in docs/ENVIRONMENTS.md's order.
pub const MICROPHONES: [(f64, f64); 3] = [(-2.2, 2.2), (-2.2, -2.2), (2.2, 0.0)];
// The tip moves at |v| = l |thdot| <= 8, so the radial speed |s| <= 8 and
// f = 440 * 20 / (20 - s) lies in [440 * 20 / 28, 440 * 20 / 12] = [314.29, 733.33] Hz.
const FREQ_MIN: f64 = SOURCE_HZ * SOUND_SPEED / (SOUND_SPEED + MAX_SPEED * L);
const FREQ_MAX: f64 = SOURCE_HZ * SOUND_SPEED / (SOUND_SPEED - MAX_SPEED * L);

/// Which sensors the pendulum has, and its motor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PendulumConfig {
    /// Observe `proprio` = (cos th, sin th, thdot): off in the paper's setting.
    pub proprio: bool,
    /// Observe `pixels`: a 60 x 60 binary image of the rod and axle.
    pub pixels: bool,
    /// Observe `sound`: (frequency, amplitude) at each of three microphones, normalised to [0, 1].
    pub sound: bool,
    /// Torque limit; actions are clipped to [-max_torque, max_torque] (Pendulum-v1: 2).
    pub max_torque: f32,
    /// The value of a lit pixel: 1 (a binary image, the paper's), or up to 255, e.g. 255 for
    /// off-the-shelf CNN policies that take an image to be a `uint8` Box on 0..255 (SB3's).
    pub pixel_value: u8,
}

impl Default for PendulumConfig {
    fn default() -> Self {
        Self { proprio: false, pixels: true, sound: true, max_torque: 2.0, pixel_value: 1 }
    }
}

/// The pendulum. `th = 0` points up; the state `th` is not wrapped, as in Gymnasium.
pub struct MultimodalPendulum {
    config: PendulumConfig,
    obs_space: ObsSpace,
    action_space: ActionSpace,
    rng: EnvRng,
    th: f64,
    thdot: f64,
    needs_reset: bool,
}

impl MultimodalPendulum {
    /// Builds the environment. Its random stream starts from seed 0 until `reset(Some(seed))`.
    pub fn new(config: PendulumConfig) -> Result<Self, EnvError> {
        let invalid = |param: &str, reason: &str| EnvError::InvalidParam {
            env: NAME.to_string(),
            param: param.to_string(),
            reason: reason.to_string(),
        };
        if !(config.max_torque.is_finite() && config.max_torque > 0.0) {
            return Err(invalid("max_torque", &format!("must be finite and > 0, got {}", config.max_torque)));
        }
        if !(config.proprio || config.pixels || config.sound) {
            return Err(invalid("pixels", "all modalities (proprio, pixels, sound) are off; enable at least one"));
        }
        if config.pixel_value == 0 {
            return Err(invalid("pixel_value", "must be in 1..=255 (the value of a lit pixel), got 0"));
        }
        let mut modalities = Vec::new();
        if config.pixels {
            let high = config.pixel_value as f32;
            modalities.push(("pixels", ModalitySpec::uniform(&[1, IMAGE_SIZE, IMAGE_SIZE], DType::U8, 0.0, high)));
        }
        if config.proprio {
            let max_speed = MAX_SPEED as f32;
            modalities.push(("proprio", ModalitySpec::vector(&[(-1.0, 1.0), (-1.0, 1.0), (-max_speed, max_speed)])));
        }
        if config.sound {
            modalities.push(("sound", ModalitySpec::uniform(&[2 * MICROPHONES.len()], DType::F32, 0.0, 1.0)));
        }
        let action_space = ActionSpace::Box { low: vec![-config.max_torque], high: vec![config.max_torque] };
        Ok(Self {
            obs_space: ObsSpace::new(modalities)?,
            action_space,
            config,
            rng: EnvRng::seed_from_u64(0),
            th: 0.0,
            thdot: 0.0,
            needs_reset: true,
        })
    }

    /// `(th, thdot)`.
    pub fn state(&self) -> (f64, f64) {
        (self.th, self.thdot)
    }

    /// Puts the pendulum in a state (for tests and demonstrations); `step` may follow directly.
    pub fn set_state(&mut self, th: f64, thdot: f64) {
        self.th = th;
        self.thdot = thdot;
        self.needs_reset = false;
    }

    /// Modalities in the space's (sorted) order: pixels, proprio, sound.
    fn observe(&self) -> Obs {
        let (th, thdot) = (self.th, self.thdot);
        let mut data = Vec::with_capacity(3);
        if self.config.pixels {
            let mut img = vec![0u8; IMAGE_SIZE * IMAGE_SIZE];
            render_pixels(th, &mut img);
            if self.config.pixel_value != 1 {
                img.iter_mut().for_each(|p| *p *= self.config.pixel_value);
            }
            data.push(ModalityData::U8(img));
        }
        if self.config.proprio {
            // `step` clips thdot to [-8, 8], so no clamp is needed.
            data.push(ModalityData::F32(vec![th.cos() as f32, th.sin() as f32, thdot as f32]));
        }
        if self.config.sound {
            data.push(ModalityData::F32(microphones(th, thdot).to_vec()));
        }
        Obs::new(data)
    }
}

/// One Pendulum-v1 step from `(th, thdot)` with the already clipped torque `u`: the next state and
/// the reward, which charges the state the step starts from.
fn physics(th: f64, thdot: f64, u: f64) -> (f64, f64, f64) {
    let cost = angle_normalize(th).powi(2) + 0.1 * thdot * thdot + 0.001 * u * u;
    let thdot = (thdot + (3.0 * G / (2.0 * L) * th.sin() + 3.0 / (M * L * L) * u) * DT).clamp(-MAX_SPEED, MAX_SPEED);
    (th + thdot * DT, thdot, -cost)
}

/// `th` wrapped into [-pi, pi), as Python's `((x + pi) % (2 pi)) - pi`.
fn angle_normalize(th: f64) -> f64 {
    (th + PI).rem_euclid(2.0 * PI) - PI
}

/// Draws the rod (a capsule from the axle to the tip, length 1, width 0.2) and the axle (a disc
/// of radius 0.05) as 1s onto `out`, a zeroed 60 x 60 row-major image, row 0 at the top.
/// `th = 0` points up and positive `th` turns counter-clockwise, so the tip is at
/// `(x, y) = (-sin th, cos th)` (x right, y up): th = pi/2 puts it on the left.
///
/// Panics if `out` does not hold 60 * 60 bytes.
pub fn render_pixels(th: f64, out: &mut [u8]) {
    let (sin, cos) = th.sin_cos();
    VIEW.fill_capsule(out, (0.0, 0.0), (-sin * L, cos * L), ROD_RADIUS, 1);
    VIEW.fill_disc(out, (0.0, 0.0), AXLE_RADIUS, 1);
}

/// Raw `(frequency in Hz, amplitude)` at each microphone, in [`MICROPHONES`] order.
fn microphones_raw(th: f64, thdot: f64) -> [(f64, f64); 3] {
    let (sin, cos) = th.sin_cos();
    // (height, left) frame: tip p = (cos, sin), velocity v = (-sin, cos) * l * thdot.
    let (p, v) = ((cos * L, sin * L), (-sin * L * thdot, cos * L * thdot));
    MICROPHONES.map(|m| {
        let d = (m.0 - p.0, m.1 - p.1);
        let dist2 = d.0 * d.0 + d.1 * d.1;
        let radial_speed = (v.0 * d.0 + v.1 * d.1) / dist2.sqrt();
        (SOURCE_HZ * SOUND_SPEED / (SOUND_SPEED - radial_speed), 1.0 / dist2)
    })
}

/// The `sound` modality: per microphone, frequency then amplitude, each min-max normalised to
/// [0, 1] with the analytic bounds (frequency: see `FREQ_MIN`; amplitude: |p| = 1 puts
/// |m - p| in [|m| - 1, |m| + 1], so 1/|m - p|^2 lies in [1/(|m|+1)^2, 1/(|m|-1)^2]).
pub fn microphones(th: f64, thdot: f64) -> [f32; 6] {
    let normalise = |x: f64, lo: f64, hi: f64| ((x - lo) / (hi - lo)).clamp(0.0, 1.0) as f32;
    let raw = microphones_raw(th, thdot);
    let mut out = [0.0; 6];
    for (i, (&(freq, amp), m)) in raw.iter().zip(MICROPHONES).enumerate() {
        let m_norm = (m.0 * m.0 + m.1 * m.1).sqrt();
        out[2 * i] = normalise(freq, FREQ_MIN, FREQ_MAX);
        out[2 * i + 1] = normalise(amp, (m_norm + L).powi(-2), (m_norm - L).powi(-2));
    }
    out
}

impl Env for MultimodalPendulum {
    fn save_state(&self) -> Option<EnvState> {
        Some(EnvState::new(NAME, &(&self.rng, self.th, self.thdot, self.needs_reset), None))
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        (self.rng, self.th, self.thdot, self.needs_reset) = state.fields(NAME)?;
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

    /// th ~ U(-pi, pi), thdot ~ U(-1, 1), then one zero-torque step whose reward is dropped.
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        if let Some(seed) = seed {
            self.rng = EnvRng::seed_from_u64(seed);
        }
        let th = self.rng.gen_range(-PI..PI);
        let thdot = self.rng.gen_range(-1.0..1.0);
        let (th, thdot, _) = physics(th, thdot, 0.0);
        self.set_state(th, thdot);
        Ok((self.observe(), Info::new()))
    }

    /// Torques beyond `max_torque` are clipped, as Pendulum-v1 does.
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        validate_action(NAME, &self.action_space, action)?;
        if self.needs_reset {
            return Err(EnvError::NeedsReset { env: NAME.to_string() });
        }
        let Action::Continuous(torque) = action else { unreachable!("validate_action accepts only Box actions here") };
        let max_torque = f64::from(self.config.max_torque);
        let u = f64::from(torque[0]).clamp(-max_torque, max_torque);
        let (th, thdot, reward) = physics(self.th, self.thdot, u);
        self.th = th;
        self.thdot = thdot;
        Ok(Step { obs: self.observe(), reward, terminated: false, truncated: false, info: Info::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(config: PendulumConfig) -> MultimodalPendulum {
        MultimodalPendulum::new(config).unwrap()
    }

    fn all_modalities() -> PendulumConfig {
        PendulumConfig { proprio: true, ..PendulumConfig::default() }
    }

    fn torque(u: f32) -> Action {
        Action::Continuous(vec![u])
    }

    fn rollout(env: &mut MultimodalPendulum, seed: Option<u64>) -> Vec<(Obs, f64)> {
        let (obs, _) = env.reset(seed).unwrap();
        let mut out = vec![(obs, 0.0)];
        for i in 0..50 {
            let s = env.step(&torque((i as f32 * 0.7).sin() * 3.0)).unwrap();
            out.push((s.obs, s.reward));
        }
        out
    }

    #[test]
    fn same_seed_gives_identical_episodes_and_different_seeds_differ() {
        let (mut a, mut b) = (env(all_modalities()), env(all_modalities()));
        let first = rollout(&mut a, Some(7));
        assert_eq!(first, rollout(&mut b, Some(7)));
        assert_eq!(first, rollout(&mut a, Some(7)), "reseeding restarts the stream");
        assert_ne!(first, rollout(&mut b, Some(8)));
        // `None` continues the stream: the next episode differs from the seeded one.
        assert_ne!(first, rollout(&mut a, None));
    }

    #[test]
    fn dynamics_and_rewards_match_pendulum_v1_equations() {
        let mut e = env(all_modalities());
        let (mut th, mut thdot) = (2.5_f64, -0.3_f64);
        e.set_state(th, thdot);
        for i in 0..200 {
            let a = [-5.0_f32, -2.0, -1.3, 0.0, 0.4, 2.0, 3.7][i % 7];
            // Independent transcription of gymnasium/envs/classic_control/pendulum.py.
            let u = (a as f64).clamp(-2.0, 2.0);
            let norm = ((th + PI) % (2.0 * PI) + 2.0 * PI) % (2.0 * PI) - PI;
            let want_reward = -(norm * norm + 0.1 * thdot * thdot + 0.001 * u * u);
            let new_thdot = (thdot + (3.0 * 10.0 / 2.0 * th.sin() + 3.0 * u) * 0.05).clamp(-8.0, 8.0);
            th += new_thdot * 0.05;
            thdot = new_thdot;

            let step = e.step(&torque(a)).unwrap();
            let (got_th, got_thdot) = e.state();
            assert!((got_th - th).abs() < 1e-5 && (got_thdot - thdot).abs() < 1e-5, "step {i}");
            assert!((step.reward - want_reward).abs() < 1e-5, "step {i}: {} vs {want_reward}", step.reward);
            assert!(!step.terminated && !step.truncated);
            assert!(step.reward >= -16.2736 && step.reward <= 0.0);
        }
    }

    #[test]
    fn microphones_hear_hand_computed_doppler_and_amplitudes() {
        // th = 0, thdot = 0: p = (1, 0), at rest, so f = 440 Hz everywhere.
        // |m1 - p|^2 = |(-3.2, 2.2)|^2 = 15.08 = |m2 - p|^2; |m3 - p|^2 = |(1.2, 0)|^2 = 1.44.
        let want = [(440.0, 1.0 / 15.08), (440.0, 1.0 / 15.08), (440.0, 1.0 / 1.44)];
        // th = pi/2, thdot = 2: p = (0, 1), v = (-2, 0).
        // m1 - p = (-2.2, 1.2), |.|^2 = 6.28: s = 4.4 / 2.50599 = 1.755791, f = 8800 / 18.244209.
        // m2 - p = (-2.2, -3.2), |.|^2 = 15.08: s = 4.4 / 3.883298 = 1.133058, f = 8800 / 18.866942.
        // m3 - p = (2.2, -1), |.|^2 = 5.84: s = -4.4 / 2.416609 = -1.820733, f = 8800 / 21.820733.
        let want_moving = [(482.34484, 0.1592357), (466.42428, 0.0663130), (403.28618, 0.1712329)];
        for ((th, thdot), want) in [((0.0, 0.0), want), ((PI / 2.0, 2.0), want_moving)] {
            for (got, want) in microphones_raw(th, thdot).iter().zip(want) {
                assert!((got.0 - want.0).abs() < 1e-4, "frequency {} vs {}", got.0, want.0);
                assert!((got.1 - want.1).abs() < 1e-6, "amplitude {} vs {}", got.1, want.1);
            }
        }
        // Normalised: f_norm = (f - 314.2857) / (733.3333 - 314.2857), so 440 Hz -> 0.3.
        // Amplitude bounds: |m1| = |m2| = 3.111270 -> [0.0591627, 0.2243430]; |m3| = 2.2 ->
        // [0.0976563, 0.6944444], so microphone 3 at th = 0 hears the maximum, 1.
        let want = [0.3, 0.0432878, 0.3, 0.0432878, 0.3, 1.0];
        let want_moving = [0.4010502, 0.6058408, 0.3630579, 0.0432878, 0.2123875, 0.1232877];
        for ((th, thdot), want) in [((0.0, 0.0), want), ((PI / 2.0, 2.0), want_moving)] {
            for (got, want) in microphones(th, thdot).iter().zip(want) {
                assert!((got - want).abs() < 1e-5, "normalised {got} vs {want}");
            }
        }
    }

    #[test]
    fn sound_stays_in_unit_interval_at_the_speed_limits() {
        for i in 0..1000 {
            let th = i as f64 * 0.0137;
            for thdot in [-MAX_SPEED, -3.0, 0.0, 5.0, MAX_SPEED] {
                assert!(microphones(th, thdot).iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
    }

    fn render(th: f64) -> Vec<u8> {
        let mut img = vec![0u8; IMAGE_SIZE * IMAGE_SIZE];
        render_pixels(th, &mut img);
        img
    }

    fn lit(img: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..img.len()).filter(|&k| img[k] != 0).map(|k| (k / IMAGE_SIZE, k % IMAGE_SIZE))
    }

    #[test]
    fn upright_rod_is_in_the_upper_half_and_left_right_symmetric() {
        let img = render(0.0);
        assert!(img.iter().all(|&p| p <= 1));
        // The rod spans y in [-0.1, 1.1]: only its rounded base (2 rows at 0.044 per pixel)
        // reaches below the centre line between rows 29 and 30.
        let (upper, lower) = lit(&img).fold((0, 0), |(u, l), (r, _)| if r < 30 { (u + 1, l) } else { (u, l + 1) });
        assert!(upper > 80 && lower <= 8, "upper {upper}, lower {lower}");
        assert!(lit(&img).all(|(r, _)| r <= 32));
        for row in img.chunks(IMAGE_SIZE) {
            assert!(row.iter().eq(row.iter().rev()));
        }
        // The tip reaches y = 1.1, i.e. (1.32 - 1.1) / 0.044 = 5 rows below the top.
        assert_eq!(lit(&img).map(|(r, _)| r).min(), Some(5));
    }

    #[test]
    fn quarter_turn_puts_the_tip_on_the_left() {
        let img = render(PI / 2.0);
        assert!(img.iter().all(|&p| p <= 1));
        let cols: Vec<usize> = lit(&img).map(|(_, c)| c).collect();
        assert!(cols.iter().all(|&c| c <= 32), "nothing right of the axle but the rod's base");
        assert_eq!(cols.iter().min(), Some(&5));
        // Upside down: the mirror image of upright.
        let (up, down) = (render(0.0), render(PI));
        assert!(lit(&down).all(|(r, _)| r >= 27));
        assert_eq!(lit(&up).count(), lit(&down).count());
    }

    #[test]
    fn observations_follow_the_space_and_bounds() {
        for config in
            [PendulumConfig::default(), all_modalities(), PendulumConfig { pixels: false, ..all_modalities() }]
        {
            let mut e = env(config);
            let names: Vec<&str> = e.observation_space().names().collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]));
            let (obs, _) = e.reset(Some(3)).unwrap();
            obs.check(e.observation_space()).unwrap();
            for i in 0..300 {
                let s = e.step(&torque(if i % 40 < 20 { 2.0 } else { -2.0 })).unwrap();
                s.obs.check(e.observation_space()).unwrap();
            }
        }
    }

    #[test]
    fn bad_actions_and_config_are_rejected_with_names() {
        let mut e = env(PendulumConfig::default());
        assert!(matches!(e.step(&torque(0.0)), Err(EnvError::NeedsReset { .. })));
        e.reset(Some(0)).unwrap();
        for bad in
            [Action::Continuous(vec![]), Action::Continuous(vec![0.0, 1.0]), torque(f32::NAN), Action::Discrete(1)]
        {
            match e.step(&bad) {
                Err(err @ EnvError::InvalidAction { .. }) => assert!(err.to_string().contains(NAME)),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let off = PendulumConfig { pixels: false, sound: false, proprio: false, ..PendulumConfig::default() };
        assert!(matches!(MultimodalPendulum::new(off), Err(EnvError::InvalidParam { .. })));
        for max_torque in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let err = MultimodalPendulum::new(PendulumConfig { max_torque, ..Default::default() }).err().unwrap();
            assert!(matches!(&err, EnvError::InvalidParam { param, .. } if param == "max_torque"));
        }
        let err = MultimodalPendulum::new(PendulumConfig { pixel_value: 0, ..Default::default() }).err().unwrap();
        assert!(matches!(&err, EnvError::InvalidParam { param, .. } if param == "pixel_value"));
    }

    #[test]
    fn pixel_value_scales_the_binary_image_and_its_bound() {
        let mut binary = env(PendulumConfig::default());
        let mut bright = env(PendulumConfig { pixel_value: 255, ..Default::default() });
        assert_eq!(bright.observation_space().spec(0).high[0], 255.0);
        assert_eq!(binary.observation_space().spec(0).high[0], 1.0);
        let (a, b) = (rollout(&mut binary, Some(4)), rollout(&mut bright, Some(4)));
        for ((oa, ra), (ob, rb)) in a.iter().zip(&b) {
            let (ModalityData::U8(pa), ModalityData::U8(pb)) = (&oa.data[0], &ob.data[0]) else { panic!("u8 pixels") };
            assert!(pa.iter().zip(pb).all(|(&x, &y)| y == x * 255), "lit pixels are 255, the rest 0");
            assert_eq!((oa.data[1..].to_vec(), ra), (ob.data[1..].to_vec(), rb), "the rest is unchanged");
        }
    }

    #[test]
    fn config_reads_toml_with_defaults_and_rejects_unknown_keys() {
        let c: PendulumConfig = toml::from_str("proprio = true\nmax_torque = 1.5").unwrap();
        assert_eq!(c, PendulumConfig { proprio: true, max_torque: 1.5, ..Default::default() });
        assert!(toml::from_str::<PendulumConfig>("torque = 1.0").is_err());
    }

    /// `cargo test --release -p m3ixup-envs pendulum_step_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn pendulum_step_speed() {
        let mut e = env(PendulumConfig::default());
        e.reset(Some(0)).unwrap();
        let actions: Vec<Action> = (0..64).map(|i| torque((i as f32 * 0.3).sin() * 2.0)).collect();
        let n = 2_000_000;
        let start = std::time::Instant::now();
        let mut sum = 0.0;
        for i in 0..n {
            sum += e.step(&actions[i % 64]).unwrap().reward;
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!("multimodal-pendulum step: {ns:.0} ns (checksum {sum})");
    }
}
