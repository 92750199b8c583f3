//! Environments by name: parameters from TOML, wrapper parameters, clear errors.

use m3ixup_envs::registry::EnvDefaults;
use m3ixup_envs::{make, registered_names, Action, DType, EnvError};

mod common;
use common::{Counter, CounterConfig};

fn params(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

#[test]
fn builtins_are_registered_by_name() {
    let names = registered_names();
    for name in ["multimodal-pendulum", "pixel-cartpole", "reacher"] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
}

#[test]
fn multimodal_pendulum_defaults_to_the_papers_two_frame_pixels_and_sound() {
    let env = make("multimodal-pendulum", &toml::Table::new()).unwrap();
    let space = env.observation_space();
    let names: Vec<&str> = space.names().collect();
    assert_eq!(names, ["pixels", "sound"]);
    assert_eq!(space.spec(0).shape, vec![2, 60, 60]);
    assert_eq!(space.spec(0).dtype, DType::U8);
    assert_eq!(space.spec(1).shape, vec![12]);
    let with_proprio = make("multimodal-pendulum", &params("proprio = true\nframe_stack = 3")).unwrap();
    let names: Vec<&str> = with_proprio.observation_space().names().collect();
    assert_eq!(names, ["pixels", "proprio", "sound"]);
    assert_eq!(with_proprio.observation_space().spec(0).shape, vec![3, 60, 60]);
}

#[test]
fn max_episode_steps_truncates_the_episode() {
    let mut env = make("multimodal-pendulum", &params("max_episode_steps = 7")).unwrap();
    env.reset(Some(0)).unwrap();
    let action = Action::Continuous(vec![0.0]);
    let flags: Vec<bool> = (0..7).map(|_| env.step(&action).unwrap().truncated).collect();
    assert_eq!(flags, [false, false, false, false, false, false, true]);
}

#[test]
fn an_unknown_environment_name_lists_the_registered_ones() {
    let err = make("multimodal-pendulm", &toml::Table::new()).err().unwrap();
    assert!(matches!(err, EnvError::UnknownEnv { .. }));
    let text = err.to_string();
    assert!(
        text.contains("multimodal-pendulm") && text.contains("multimodal-pendulum") && text.contains("reacher"),
        "{text}"
    );
}

#[test]
fn unknown_or_invalid_parameters_are_named() {
    let cases = [
        ("multimodal-pendulum", "propiro = true", "propiro"),
        ("multimodal-pendulum", "proprio = \"yes\"", "proprio"),
        ("multimodal-pendulum", "max_torque = -1.0", "max_torque"),
        ("multimodal-pendulum", "frame_stack = 0", "frame_stack"),
        ("multimodal-pendulum", "frame_stack = -2", "frame_stack"),
        ("multimodal-pendulum", "sensor_dropout = { mode = \"per-step\", p = 2.0 }", "sensor_dropout"),
        ("multimodal-pendulum", "sensor_dropout = { mode = \"sometimes\" }", "sensor_dropout"),
        (
            "multimodal-pendulum",
            "sensor_dropout = { mode = \"per-episode\", p = 0.5, keep_data = 1 }",
            "sensor_dropout.keep_data",
        ),
        ("pixel-cartpole", "image_size = 2", "image_size"),
        ("reacher", "colour = 1", "colour"),
    ];
    for (env, text, param) in cases {
        match make(env, &params(text)) {
            Err(EnvError::InvalidParam { env: e, param: p, reason }) => {
                assert_eq!((e.as_str(), p.as_str()), (env, param), "{text}: {reason}");
            }
            Err(other) => panic!("{text}: expected InvalidParam naming `{param}`, got {other}"),
            Ok(_) => panic!("{text}: accepted"),
        }
    }
}

#[test]
fn a_user_environment_gets_its_own_config_and_the_common_wrapper_parameters() {
    let mut registry = m3ixup_envs::standard_registry();
    registry.register_typed("counter", EnvDefaults::default(), |c: CounterConfig| Ok(Counter::new(c.terminate_at)));
    let mut env = registry.make("counter", &params("terminate_at = 2\nframe_stack = 2")).unwrap();
    assert_eq!(env.observation_space().spec(1).shape, vec![4]);
    env.reset(None).unwrap();
    env.step(&Action::Continuous(vec![0.5])).unwrap();
    let last = env.step(&Action::Continuous(vec![0.5])).unwrap();
    assert!(last.terminated);
    assert_eq!(last.info["episode/return"], 1.0);
    let err = registry.make("counter", &params("terminate = 2")).err().unwrap();
    assert!(err.to_string().contains("`terminate`"), "{err}");
}

#[cfg(not(feature = "python"))]
#[test]
fn gym_ids_without_the_python_feature_name_the_feature() {
    let text = make("gym:Pendulum-v1", &toml::Table::new()).err().unwrap().to_string();
    assert!(text.contains("gym:Pendulum-v1") && text.contains("`python` feature"), "{text}");
    assert!(!m3ixup_envs::is_registered("gym:Pendulum-v1"));
}

#[test]
fn a_family_is_selected_as_family_colon_id() {
    let mut registry = m3ixup_envs::standard_registry();
    let factory: m3ixup_envs::registry::EnvFactory = std::sync::Arc::new(|params: &toml::Table| {
        let limit = params.get("id").and_then(|v| v.as_str()).unwrap().parse::<u32>().unwrap();
        Ok(Box::new(Counter::new(Some(limit))) as Box<dyn m3ixup_envs::Env>)
    });
    registry.register_family("count", EnvDefaults::default(), factory);
    assert!(
        registry.contains("count:5")
            && !registry.contains("count:")
            && !registry.names().contains(&"count".to_string())
    );
    let mut env = registry.make("count:2", &toml::Table::new()).unwrap();
    env.reset(Some(0)).unwrap();
    env.step(&Action::Continuous(vec![0.0])).unwrap();
    assert!(env.step(&Action::Continuous(vec![0.0])).unwrap().terminated);
    let text = registry.make("nothing", &toml::Table::new()).err().unwrap().to_string();
    assert!(text.contains("count:<id>"), "{text}");
}

#[test]
fn sensor_dropout_keep_data_marks_the_sensor_missing_and_keeps_its_data() {
    let dropout = |keep: bool| {
        let text = format!("sensor_dropout = {{ mode = \"fixed\", modalities = [\"sound\"], keep_data = {keep} }}");
        let mut env = make("multimodal-pendulum", &params(&text)).unwrap();
        env.reset(Some(5)).unwrap();
        env.step(&Action::Continuous(vec![0.3])).unwrap().obs
    };
    let (kept, cleared) = (dropout(true), dropout(false));
    let sound = kept.present.len() - 1; // modalities are sorted by name: pixels, sound
    assert_eq!(kept.present, cleared.present);
    assert!(!kept.present[sound]);
    assert!((0..cleared.data[sound].len()).all(|j| cleared.data[sound].get_f32(j) == 0.0));
    assert!((0..kept.data[sound].len()).any(|j| kept.data[sound].get_f32(j) != 0.0), "the sound is kept");
    assert_eq!(kept.data[0], cleared.data[0], "pixels untouched");
}
