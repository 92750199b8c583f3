//! The Gymnasium bridge (feature `python`): `gym:<id>` environments with modality mapping,
//! `check_env` on them, and the errors for bad input. Needs a Python with gymnasium and
//! pygame (`.ci/run` activates one: VIRTUAL_ENV).
#![cfg(feature = "python")]

use m3ixup_envs::{check_env, gym, is_registered, make, Action, DType, EnvError};

fn params(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

fn message(e: EnvError) -> String {
    e.to_string()
}

#[test]
fn pendulum_maps_render_frames_to_pixels_and_its_state_to_proprio() {
    assert!(is_registered("gym:Pendulum-v1"));
    let mut env = make("gym:Pendulum-v1", &params("pixels = true\nimage_size = 32\nframe_stack = 2")).unwrap();
    assert_eq!(env.name(), "gym:Pendulum-v1");
    let space = env.observation_space().clone();
    assert_eq!(space.names().collect::<Vec<_>>(), ["pixels", "proprio"]);
    assert_eq!(space.spec(0).shape, vec![6, 32, 32], "2 stacked RGB frames");
    assert_eq!(space.spec(0).dtype, DType::U8);
    assert_eq!(space.spec(1).shape, vec![6], "2 stacked (cos, sin, thdot)");
    assert_eq!(space.spec(1).high[2], 8.0);

    let (obs, _) = env.reset(Some(3)).unwrap();
    let (again, _) = env.reset(Some(3)).unwrap();
    assert_eq!(obs, again, "same seed, same first observation");
    let proprio = obs.data[1].as_f32().unwrap();
    let (c, s) = (proprio[3], proprio[4]);
    assert!((c * c + s * s - 1.0).abs() < 1e-5, "cos^2 + sin^2 = 1: {proprio:?}");
    let pixels = obs.data[0].as_u8().unwrap();
    let distinct: std::collections::BTreeSet<u8> = pixels.iter().copied().collect();
    assert!(distinct.len() > 2, "the frame shows the rod on the background");

    // The frame follows the state: a different pole angle draws different pixels.
    let mut frames = vec![pixels.to_vec()];
    for _ in 0..10 {
        let step = env.step(&Action::Continuous(vec![2.0])).unwrap();
        assert!(step.reward <= 0.0 && !step.terminated);
        frames.push(step.obs.data[0].as_u8().unwrap().to_vec());
    }
    assert_ne!(frames[0], frames[10]);
}

#[test]
fn grayscale_and_rectangular_image_size() {
    let env =
        make("gym:Pendulum-v1", &params("pixels = true\ngrayscale = true\nimage_size = [24, 40]\nproprio = false"))
            .unwrap();
    let space = env.observation_space();
    assert_eq!(space.names().collect::<Vec<_>>(), ["pixels"]);
    assert_eq!(space.spec(0).shape, vec![1, 24, 40]);
}

#[test]
fn gym_environments_pass_check_env() {
    let mut pendulum = make("gym:Pendulum-v1", &params("pixels = true\nimage_size = 16")).unwrap();
    let report = check_env(pendulum.as_mut(), 0, 250).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.truncated_episodes >= 1, "Pendulum-v1 is cut at 200 steps");
    let mut cartpole =
        make("gym", &params("id = \"CartPole-v1\"\nsensor_dropout = { mode = \"per-step\", p = 0.3 }")).unwrap();
    let report = check_env(cartpole.as_mut(), 1, 300).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.terminated_episodes >= 1);
    assert!(report.rejected_actions >= 3);
}

/// Pendulum's frames drawn in several threads at once are the frames drawn alone: pygame's
/// drawing releases the GIL and is not thread-safe, so the bridge draws one frame at a time
/// (vector environments and tests step environments from several threads).
#[test]
fn frames_drawn_in_parallel_threads_match_frames_drawn_alone() {
    fn episode(env: &mut dyn m3ixup_envs::Env) -> Vec<Vec<u8>> {
        let (obs, _) = env.reset(Some(0)).unwrap();
        let mut frames = vec![obs.data[0].as_u8().unwrap().to_vec()];
        for t in 0..60 {
            let torque = ((t * 7 % 13) as f32 / 3.0) - 2.0;
            let step = env.step(&Action::Continuous(vec![torque])).unwrap();
            frames.push(step.obs.data[0].as_u8().unwrap().to_vec());
        }
        frames
    }
    let config = params("pixels = true\nimage_size = 96\nproprio = false");
    let alone = episode(make("gym:Pendulum-v1", &config).unwrap().as_mut());
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut env = make("gym:Pendulum-v1", &config).unwrap();
                (0..4).map(|_| episode(env.as_mut())).collect::<Vec<_>>()
            })
        })
        .collect();
    for (i, thread) in threads.into_iter().enumerate() {
        for (run, frames) in thread.join().unwrap().iter().enumerate() {
            let differing = (0..frames.len()).filter(|&t| frames[t] != alone[t]).collect::<Vec<_>>();
            assert!(
                differing.is_empty(),
                "thread {i}, episode {run}: frames {differing:?} differ from those drawn alone"
            );
        }
    }
}

#[test]
fn an_unknown_id_is_an_error_naming_it() {
    let text = message(make("gym:NoSuchEnvironment-v0", &toml::Table::new()).err().unwrap());
    assert!(text.contains("gym:NoSuchEnvironment-v0") && text.contains("unknown Gymnasium id"), "{text}");
    let text = message(make("gym", &toml::Table::new()).err().unwrap());
    assert!(text.contains("`id`") && text.contains("missing"), "{text}");
    let text = message(make("gym:Pendulum-v1", &params("id = \"CartPole-v1\"")).err().unwrap());
    assert!(text.contains("CartPole-v1") && text.contains("Pendulum-v1"), "{text}");
    let text = message(make("gym:Pendulum-v1", &params("pixel = true")).err().unwrap());
    assert!(text.contains("gym:Pendulum-v1") && text.contains("pixel"), "{text}");
}

const FIXTURES: &str = r#"
import numpy as np
import gymnasium as gym
from gymnasium import spaces

class Raising(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(3, start=-1)
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}
    def step(self, action):
        self.t += 1
        if self.t == 3:
            raise ValueError(f"boom at step {self.t}")
        return np.full(2, 0.5 * action, np.float32), 1.0, False, False, {"t": self.t}

class TupleObs(Raising):
    observation_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3)))

class DictObs(gym.Env):
    observation_space = spaces.Dict({
        "camera": spaces.Box(0, 255, (8, 6, 3), np.uint8),
        "joints": spaces.Box(-2.0, 2.0, (2, 2), np.float64),
        "mode": spaces.Discrete(3),
    })
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}
    def _obs(self):
        cam = np.zeros((8, 6, 3), np.uint8)
        cam[..., 1] = 200
        return {"camera": cam, "joints": np.full((2, 2), 1.5), "mode": 2}
    def step(self, action):
        return self._obs(), float(action[0]), True, False, {}

for name, cls in [("Raising", Raising), ("TupleObs", TupleObs), ("DictObs", DictObs)]:
    if f"m3ixup-test/{name}-v0" not in gym.registry:
        gym.register(f"m3ixup-test/{name}-v0", entry_point=cls)
"#;

#[test]
fn an_exception_in_step_is_an_error_with_the_python_message() {
    gym::exec(FIXTURES).unwrap();
    let mut env = make("gym:m3ixup-test/Raising-v0", &toml::Table::new()).unwrap();
    assert_eq!(*env.action_space(), m3ixup_envs::ActionSpace::Discrete(3));
    env.reset(Some(0)).unwrap();
    let step = env.step(&Action::Discrete(2)).unwrap();
    assert_eq!(step.obs.data[0].as_f32().unwrap(), [0.5, 0.5], "Discrete start -1: action 2 is 1 in Python");
    assert_eq!(step.info.get("t"), Some(&1.0));
    env.step(&Action::Discrete(0)).unwrap();
    let text = message(env.step(&Action::Discrete(0)).err().unwrap());
    assert!(
        text.contains("gym:m3ixup-test/Raising-v0") && text.contains("step raised ValueError: boom at step 3"),
        "{text}"
    );
    // A Python syntax error in user code is an error too, not a panic.
    let text = message(gym::exec("def (:").err().unwrap());
    assert!(text.contains("SyntaxError"), "{text}");
}

#[test]
fn an_unmappable_observation_space_is_an_error() {
    gym::exec(FIXTURES).unwrap();
    let text = message(make("gym:m3ixup-test/TupleObs-v0", &toml::Table::new()).err().unwrap());
    assert!(
        text.contains("gym:m3ixup-test/TupleObs-v0") && text.contains("Tuple") && text.contains("cannot be mapped"),
        "{text}"
    );
}

#[test]
fn dict_observations_map_key_by_key() {
    gym::exec(FIXTURES).unwrap();
    let mut env = make("gym:m3ixup-test/DictObs-v0", &toml::Table::new()).unwrap();
    let space = env.observation_space().clone();
    assert_eq!(space.names().collect::<Vec<_>>(), ["camera", "joints", "mode"]);
    assert_eq!(space.spec(0).shape, vec![3, 8, 6], "HWC image becomes CHW");
    assert_eq!(space.spec(0).dtype, DType::U8);
    assert_eq!(space.spec(1).shape, vec![4]);
    assert_eq!(space.spec(2).shape, vec![3], "Discrete becomes one-hot");
    let (obs, _) = env.reset(Some(0)).unwrap();
    let camera = obs.data[0].as_u8().unwrap();
    assert!(camera[..48].iter().all(|&v| v == 0) && camera[48..96].iter().all(|&v| v == 200));
    assert_eq!(obs.data[1].as_f32().unwrap(), [1.5; 4]);
    assert_eq!(obs.data[2].as_f32().unwrap(), [0.0, 0.0, 1.0]);
    let step = env.step(&Action::Continuous(vec![0.25, 0.0])).unwrap();
    assert!(step.terminated && step.reward == 0.25);
}
