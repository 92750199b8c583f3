//! `pixel-cartpole`: Gymnasium's CartPole-v1 observed as a grey image and as proprioception.
//!
//! Emits single frames; the registry adds frame stacking, the 500-step time limit and episode
//! statistics.

use std::f64::consts::PI;

use crate::state::{EnvRng, EnvState};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::render::Viewport;
use crate::{
    validate_action, Action, ActionSpace, DType, Env, EnvError, Info, ModalityData, ModalitySpec, Obs, ObsSpace, Step,
};

pub const NAME: &str = "pixel-cartpole";

// CartPole-v1's constants; LENGTH is half the pole's length.
const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_CART + MASS_POLE;
const LENGTH: f64 = 0.5;
const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
const TAU: f64 = 0.02;
const X_THRESHOLD: f64 = 2.4;
const THETA_THRESHOLD: f64 = 12.0 * 2.0 * PI / 360.0;

/// `proprio` bounds for (x, xdot, theta, thdot), as in Gymnasium for the positions (twice the
/// termination thresholds) and with finite velocity limits. Before termination |x| <= 2.4 and
/// |theta| <= 12 degrees; the terminating step overshoots by at most TAU times a speed, and the
/// speeds stay far inside the limits (200,000 episodes of random, biased, bang-bang and balancing
/// policies peak at |xdot| = 3.7 and |thdot| = 3.7, terminating steps included). Only stepping on
/// after termination, which Gymnasium allows and which lets the state diverge, can exceed them:
/// observations are clamped.
const PROPRIO_BOUNDS: [(f32, f32); 4] = [
    (-2.0 * X_THRESHOLD as f32, 2.0 * X_THRESHOLD as f32),
    (-10.0, 10.0),
    (-2.0 * THETA_THRESHOLD as f32, 2.0 * THETA_THRESHOLD as f32),
    (-10.0, 10.0),
];

// Rendering, in world units: Gymnasium's x window (the track +- 20%), and a y window centred on
// the track that holds the upright pole and a pole fallen below the track after termination.
const X_HALF_SPAN: f64 = X_THRESHOLD * 1.2;
const Y_HALF_SPAN: f64 = X_HALF_SPAN / 2.0;
// Gymnasium's proportions: a 0.4 x 0.24 cart, the pole's axle a quarter of the cart's height above
// its centre, a pole of length 2 * LENGTH and width 0.08 that extends half its width below the axle.
const CART_HALF_WIDTH: f64 = 0.2;
const CART_HALF_HEIGHT: f64 = 0.12;
const AXLE_HEIGHT: f64 = CART_HALF_HEIGHT / 2.0;
const POLE_HALF_WIDTH: f64 = 0.04;
const CART_VALUE: u8 = 255;
const POLE_VALUE: u8 = 160;

/// The cart-pole's sensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PixelCartPoleConfig {
    /// Observe `pixels`: a grey image_size x image_size rendering (cart 255, pole 160, background 0).
    pub pixels: bool,
    /// Observe `proprio` = (x, xdot, theta, thdot).
    pub proprio: bool,
    /// Side of the square image in pixels, 16 to 512.
    pub image_size: usize,
}

impl Default for PixelCartPoleConfig {
    fn default() -> Self {
        Self { pixels: true, proprio: true, image_size: 64 }
    }
}

/// CartPole-v1: push the cart left (action 0) or right (action 1) to keep the pole up.
pub struct PixelCartPole {
    config: PixelCartPoleConfig,
    obs_space: ObsSpace,
    action_space: ActionSpace,
    view: Viewport,
    pole_half_width: f64,
    rng: EnvRng,
    /// (x, xdot, theta, thdot); theta = 0 is upright, positive leans right.
    state: [f64; 4],
    /// Set by the first terminating step; Gymnasium gives reward 0 on the steps after it.
    terminated: bool,
    needs_reset: bool,
}

impl PixelCartPole {
    /// Builds the environment. Its random stream starts from seed 0 until `reset(Some(seed))`.
    pub fn new(config: PixelCartPoleConfig) -> Result<Self, EnvError> {
        let invalid = |param: &str, reason: String| EnvError::InvalidParam {
            env: NAME.to_string(),
            param: param.to_string(),
            reason,
        };
        if !(16..=512).contains(&config.image_size) {
            return Err(invalid("image_size", format!("must be in 16..=512, got {}", config.image_size)));
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
            modalities.push(("proprio", ModalitySpec::vector(&PROPRIO_BOUNDS)));
        }
        let view = Viewport::new(-X_HALF_SPAN, X_HALF_SPAN, -Y_HALF_SPAN, Y_HALF_SPAN, s, s);
        Ok(Self {
            obs_space: ObsSpace::new(modalities)?,
            action_space: ActionSpace::Discrete(2),
            // Thinner than 1.5 pixels, the pole could fall between pixel centres.
            pole_half_width: POLE_HALF_WIDTH.max(0.75 * view.pixel_size()),
            view,
            config,
            rng: EnvRng::seed_from_u64(0),
            state: [0.0; 4],
            terminated: false,
            needs_reset: true,
        })
    }

    /// (x, xdot, theta, thdot).
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Modalities in the space's (sorted) order: pixels, proprio.
    fn observe(&self) -> Obs {
        let mut data = Vec::with_capacity(2);
        if self.config.pixels {
            let mut img = vec![0u8; self.view.numel()];
            self.render(&mut img);
            data.push(ModalityData::U8(img));
        }
        if self.config.proprio {
            // max/min rather than clamp: they also map NaN (a state diverged long after
            // termination) into the bounds.
            let proprio =
                self.state.iter().zip(PROPRIO_BOUNDS).map(|(&v, (lo, hi))| (v as f32).max(lo).min(hi)).collect();
            data.push(ModalityData::F32(proprio));
        }
        Obs::new(data)
    }

    fn render(&self, img: &mut [u8]) {
        let [x, _, theta, _] = self.state;
        let v = &self.view;
        v.fill_rect(img, x - CART_HALF_WIDTH, -CART_HALF_HEIGHT, x + CART_HALF_WIDTH, CART_HALF_HEIGHT, CART_VALUE);
        let (sin, cos) = theta.sin_cos();
        let w = self.pole_half_width;
        // Along the pole (sin, cos) from -w to 2 LENGTH - w, across it (cos, -sin) from -w to w.
        let corner =
            |along: f64, across: f64| (x + along * sin + across * cos, AXLE_HEIGHT + along * cos - across * sin);
        let top = 2.0 * LENGTH - w;
        v.fill_convex_polygon(img, &[corner(-w, -w), corner(-w, w), corner(top, w), corner(top, -w)], POLE_VALUE);
    }
}

/// One CartPole-v1 Euler step under `force`.
fn physics([x, x_dot, theta, theta_dot]: [f64; 4], force: f64) -> [f64; 4] {
    let (sin, cos) = theta.sin_cos();
    let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS;
    let theta_acc = (GRAVITY * sin - cos * temp) / (LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS));
    let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS;
    [x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot, theta_dot + TAU * theta_acc]
}

impl Env for PixelCartPole {
    fn save_state(&self) -> Option<EnvState> {
        Some(EnvState::new(NAME, &(&self.rng, self.state, self.terminated, self.needs_reset), None))
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        (self.rng, self.state, self.terminated, self.needs_reset) = state.fields(NAME)?;
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

    /// Every state variable ~ U(-0.05, 0.05).
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        if let Some(seed) = seed {
            self.rng = EnvRng::seed_from_u64(seed);
        }
        self.state = std::array::from_fn(|_| self.rng.gen_range(-0.05..0.05));
        self.terminated = false;
        self.needs_reset = false;
        Ok((self.observe(), Info::new()))
    }

    /// Reward 1 per step, the terminating step included. Stepping on after termination works as
    /// in Gymnasium: the state keeps integrating and the reward is 0 while terminated.
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        validate_action(NAME, &self.action_space, action)?;
        if self.needs_reset {
            return Err(EnvError::NeedsReset { env: NAME.to_string() });
        }
        let force = if *action == Action::Discrete(1) { FORCE_MAG } else { -FORCE_MAG };
        self.state = physics(self.state, force);
        let [x, _, theta, _] = self.state;
        let terminated = !(x.abs() <= X_THRESHOLD && theta.abs() <= THETA_THRESHOLD);
        let reward = if terminated && self.terminated { 0.0 } else { 1.0 };
        self.terminated |= terminated;
        Ok(Step { obs: self.observe(), reward, terminated, truncated: false, info: Info::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> PixelCartPole {
        PixelCartPole::new(PixelCartPoleConfig::default()).unwrap()
    }

    fn rollout(env: &mut PixelCartPole, seed: Option<u64>) -> Vec<(Obs, f64, bool)> {
        let (obs, _) = env.reset(seed).unwrap();
        let mut out = vec![(obs, 0.0, false)];
        for i in 0..30 {
            let s = env.step(&Action::Discrete(i % 3 % 2)).unwrap();
            out.push((s.obs, s.reward, s.terminated));
        }
        out
    }

    #[test]
    fn same_seed_gives_identical_episodes_and_different_seeds_differ() {
        let (mut a, mut b) = (env(), env());
        let first = rollout(&mut a, Some(11));
        assert_eq!(first, rollout(&mut b, Some(11)));
        assert_eq!(first, rollout(&mut a, Some(11)));
        assert_ne!(first, rollout(&mut b, Some(12)));
        assert_ne!(first, rollout(&mut a, None));
    }

    #[test]
    fn dynamics_match_cartpole_v1_equations() {
        let mut e = env();
        e.reset(Some(5)).unwrap();
        let mut s = e.state();
        for i in 0..8 {
            let a = i % 2;
            // Independent transcription of gymnasium/envs/classic_control/cartpole.py.
            let force = if a == 1 { 10.0 } else { -10.0 };
            let (ct, st) = (s[2].cos(), s[2].sin());
            let temp = (force + 0.05 * s[3] * s[3] * st) / 1.1;
            let thetaacc = (9.8 * st - ct * temp) / (0.5 * (4.0 / 3.0 - 0.1 * ct * ct / 1.1));
            let xacc = temp - 0.05 * thetaacc * ct / 1.1;
            s = [s[0] + 0.02 * s[1], s[1] + 0.02 * xacc, s[2] + 0.02 * s[3], s[3] + 0.02 * thetaacc];
            let step = e.step(&Action::Discrete(a)).unwrap();
            for (got, want) in e.state().iter().zip(s) {
                assert!((got - want).abs() < 1e-12);
            }
            assert_eq!((step.reward, step.terminated), (1.0, false));
        }
    }

    #[test]
    fn pole_falls_under_constant_push_and_terminates() {
        let mut e = env();
        e.reset(Some(0)).unwrap();
        let mut steps = 0;
        let last = loop {
            let s = e.step(&Action::Discrete(1)).unwrap();
            steps += 1;
            if s.terminated || steps > 100 {
                break s;
            }
        };
        assert!(last.terminated && !last.truncated, "no termination in {steps} steps");
        assert_eq!(last.reward, 1.0);
        assert!(e.state()[2] < -THETA_THRESHOLD, "pushing right tips the pole left");
        // Gymnasium lets the caller step on: the state keeps integrating, reward 0, no panic.
        for _ in 0..2000 {
            let s = e.step(&Action::Discrete(1)).unwrap();
            assert!(s.terminated && s.reward == 0.0);
            s.obs.check(e.observation_space()).unwrap();
        }
    }

    #[test]
    fn observations_stay_in_bounds_until_termination_under_many_policies() {
        let mut e = env();
        let mut rng = EnvRng::seed_from_u64(0);
        for episode in 0..300 {
            e.reset(Some(episode)).unwrap();
            let period = 1 + episode as usize % 13;
            for t in 0..500 {
                let a = if episode % 2 == 0 { rng.gen_range(0..2) } else { (t / period % 2) as i64 };
                let s = e.step(&Action::Discrete(a)).unwrap();
                s.obs.check(e.observation_space()).unwrap();
                // Inside the episode, clamping must never have been needed.
                let inside =
                    e.state().iter().zip(PROPRIO_BOUNDS).all(|(&v, (lo, hi))| v >= lo as f64 && v <= hi as f64);
                assert!(inside, "episode {episode}, step {t}: {:?}", e.state());
                if s.terminated {
                    break;
                }
            }
        }
    }

    #[test]
    fn image_shows_cart_and_pole_where_the_state_says() {
        let mut e = env();
        e.reset(Some(0)).unwrap();
        e.state = [1.5, 0.0, 0.0, 0.0];
        let obs = e.observe();
        let img = obs.data[0].as_u8().unwrap();
        let cols_of =
            |value: u8| -> Vec<usize> { (0..img.len()).filter(|&k| img[k] == value).map(|k| k % 64).collect() };
        // Cart centre x = 1.5 -> column (1.5 + 2.88) / 0.09 - 0.5 = 48.2.
        let cart = cols_of(CART_VALUE);
        assert!(!cart.is_empty() && cart.iter().all(|&c| (46..=51).contains(&c)));
        let pole = cols_of(POLE_VALUE);
        assert!(pole.len() >= 20 && pole.iter().all(|&c| (47..=49).contains(&c)));
        assert!(img.iter().all(|&p| p == 0 || p == CART_VALUE || p == POLE_VALUE));
        // Leaning right (positive theta), the pole's top is right of its base.
        e.state = [0.0, 0.0, 0.2, 0.0];
        let obs = e.observe();
        let img = obs.data[0].as_u8().unwrap();
        let top_row = (0..img.len()).find(|&k| img[k] == POLE_VALUE).unwrap();
        assert!(top_row % 64 > 32);
    }

    #[test]
    fn small_images_still_show_the_pole() {
        let mut e = PixelCartPole::new(PixelCartPoleConfig { image_size: 16, ..Default::default() }).unwrap();
        e.reset(Some(0)).unwrap();
        for theta in [-0.2, -0.05, 0.0, 0.07, 0.2] {
            e.state = [0.3, 0.0, theta, 0.0];
            let obs = e.observe();
            assert!(obs.data[0].as_u8().unwrap().iter().filter(|&&p| p == POLE_VALUE).count() >= 3, "theta {theta}");
        }
    }

    #[test]
    fn bad_actions_and_config_are_rejected_with_names() {
        let mut e = env();
        assert!(matches!(e.step(&Action::Discrete(0)), Err(EnvError::NeedsReset { .. })));
        e.reset(None).unwrap();
        for bad in
            [Action::Discrete(-1), Action::Discrete(2), Action::Continuous(vec![1.0]), Action::Continuous(vec![])]
        {
            match e.step(&bad) {
                Err(err @ EnvError::InvalidAction { .. }) => assert!(err.to_string().contains(NAME)),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        for image_size in [0, 15, 513] {
            let err = PixelCartPole::new(PixelCartPoleConfig { image_size, ..Default::default() }).err().unwrap();
            assert!(matches!(&err, EnvError::InvalidParam { param, .. } if param == "image_size"));
        }
        assert!(PixelCartPole::new(PixelCartPoleConfig { pixels: false, proprio: false, image_size: 64 }).is_err());
        assert!(toml::from_str::<PixelCartPoleConfig>("size = 32").is_err());
    }
}
