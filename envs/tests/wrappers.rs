//! Behaviour of the wrappers: frame stacking, time limit, episode statistics, sensor dropout,
//! sensor noise and frozen sensors.

use m3ixup_envs::wrappers::{
    DropProbability, DropoutMode, EpisodeStatistics, FrameStack, SensorDropout, SensorNoise, StaleSensor, TimeLimit,
};
use m3ixup_envs::{Action, Env, ModalityData, Obs, INFO_EPISODE_LENGTH, INFO_EPISODE_RETURN};

mod common;
use common::Counter;

fn act(v: f32) -> Action {
    Action::Continuous(vec![v])
}

#[test]
fn frame_stack_repeats_the_first_frame_at_reset_and_shifts_oldest_first() {
    let mut env = FrameStack::new(Counter::new(None), 3).unwrap();
    assert_eq!(env.observation_space().spec(0).shape, vec![3, 2, 2]);
    assert_eq!(env.observation_space().spec(1).shape, vec![6]);
    let (obs, _) = env.reset(Some(0)).unwrap();
    assert_eq!(obs.data[0], ModalityData::U8(vec![0; 12]));
    assert_eq!(obs.data[1], ModalityData::F32(vec![0.0; 6]));
    env.step(&act(0.0)).unwrap();
    let obs = env.step(&act(0.0)).unwrap().obs;
    assert_eq!(obs.data[0], ModalityData::U8([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2].to_vec()));
    assert_eq!(obs.data[1], ModalityData::F32(vec![0.0, -0.0, 1.0, -1.0, 2.0, -2.0]));
    obs.check(env.observation_space()).unwrap();
    // A new episode starts from a full stack of its own first frame.
    let (obs, _) = env.reset(None).unwrap();
    assert_eq!(obs.data[0], ModalityData::U8(vec![0; 12]));
}

#[test]
fn time_limit_truncates_exactly_at_the_limit_and_restarts_counting_at_reset() {
    let mut env = TimeLimit::new(Counter::new(None), 3).unwrap();
    for _ in 0..2 {
        env.reset(None).unwrap();
        let flags: Vec<(bool, bool)> =
            (0..3).map(|_| env.step(&act(0.0)).map(|s| (s.terminated, s.truncated)).unwrap()).collect();
        assert_eq!(flags, vec![(false, false), (false, false), (false, true)]);
    }
    assert!(TimeLimit::new(Counter::new(None), 0).is_err());
}

#[test]
fn time_limit_keeps_termination_when_both_happen_on_the_same_step() {
    let mut env = TimeLimit::new(Counter::new(Some(2)), 2).unwrap();
    env.reset(None).unwrap();
    env.step(&act(0.0)).unwrap();
    let last = env.step(&act(0.0)).unwrap();
    assert!(last.terminated && last.truncated);
}

#[test]
fn episode_statistics_report_return_and_length_on_the_last_step_only() {
    let mut env = EpisodeStatistics::new(Counter::new(Some(3)));
    env.reset(None).unwrap();
    let first = env.step(&act(0.5)).unwrap();
    assert!(first.info.is_empty());
    env.step(&act(-1.0)).unwrap();
    let last = env.step(&act(0.25)).unwrap();
    assert!(last.terminated);
    assert_eq!(last.info[INFO_EPISODE_RETURN], -0.25);
    assert_eq!(last.info[INFO_EPISODE_LENGTH], 3.0);
    env.reset(None).unwrap();
    assert!(env.step(&act(1.0)).unwrap().info.is_empty());
}

#[test]
fn fixed_sensor_dropout_clears_the_named_modality_and_its_flag_and_keeps_shapes() {
    let mut env =
        SensorDropout::new(Counter::new(None), DropoutMode::Fixed { modalities: vec!["image".into()] }).unwrap();
    env.reset(Some(1)).unwrap();
    for _ in 0..3 {
        let obs = env.step(&act(0.0)).unwrap().obs;
        assert_eq!(obs.present, vec![false, true]);
        assert_eq!(obs.data[0], ModalityData::U8(vec![0; 4]));
        assert_ne!(obs.data[1], ModalityData::F32(vec![0.0; 2]));
        obs.check(env.observation_space()).unwrap();
    }
}

#[test]
fn sensor_dropout_keeping_data_drops_the_same_modalities_and_leaves_their_data_untouched() {
    let mode = DropoutMode::PerEpisode { p: 0.5.into() };
    let mut cleared = SensorDropout::new(Counter::new(None), mode.clone()).unwrap();
    let mut kept = SensorDropout::new(Counter::new(None), mode).unwrap().keeping_data(true);
    let mut plain = Counter::new(None);
    let mut withheld = 0;
    for episode in 0..40 {
        let seed = (episode == 0).then_some(3);
        let (a, b, c) = (cleared.reset(seed).unwrap().0, kept.reset(seed).unwrap().0, plain.reset(seed).unwrap().0);
        let mut steps = vec![(a, b, c)];
        for _ in 0..3 {
            steps.push((
                cleared.step(&act(0.5)).unwrap().obs,
                kept.step(&act(0.5)).unwrap().obs,
                plain.step(&act(0.5)).unwrap().obs,
            ));
        }
        for (cleared, kept, plain) in steps {
            assert_eq!(kept.present, cleared.present, "the same draws");
            assert_eq!(kept.data, plain.data, "no data is cleared");
            withheld += kept.present.iter().filter(|&&p| !p).count();
        }
    }
    assert!(withheld > 0, "some modality was dropped");
}

#[test]
fn sensor_dropout_rejects_unknown_modalities_and_bad_probabilities() {
    let err =
        SensorDropout::new(Counter::new(None), DropoutMode::Fixed { modalities: vec!["sound".into()] }).err().unwrap();
    let text = err.to_string();
    assert!(text.contains("sound") && text.contains("image") && text.contains("vec"), "{text}");
    for p in [-0.1, 1.5, f64::NAN] {
        let err = SensorDropout::new(Counter::new(None), DropoutMode::PerStep { p: p.into(), modalities: vec![] })
            .err()
            .unwrap();
        assert!(err.to_string().contains("outside [0, 1]"), "{err}");
    }
    assert!(SensorDropout::new(Counter::new(None), DropoutMode::PerEpisode { p: 1.0.into() }).is_err());
}

/// Presence masks seen over `episodes` episodes of `len` steps each (reset included).
fn masks(mode: DropoutMode, seed: u64, episodes: usize, len: usize) -> Vec<Vec<Vec<bool>>> {
    let mut env = SensorDropout::new(Counter::new(None), mode).unwrap();
    (0..episodes)
        .map(|e| {
            let (obs, _) = env.reset(if e == 0 { Some(seed) } else { None }).unwrap();
            let mut seen = vec![obs.present];
            for _ in 0..len {
                let obs = env.step(&act(0.0)).unwrap().obs;
                for (i, present) in obs.present.iter().enumerate() {
                    if !present {
                        assert!((0..obs.data[i].len()).all(|j| obs.data[i].get_f32(j) == 0.0));
                    }
                }
                seen.push(obs.present);
            }
            seen
        })
        .collect()
}

#[test]
fn per_episode_dropout_holds_one_mask_per_episode_and_never_drops_every_modality() {
    let runs = masks(DropoutMode::PerEpisode { p: 0.5.into() }, 7, 200, 5);
    let mut distinct = std::collections::BTreeSet::new();
    for episode in &runs {
        assert!(episode.iter().all(|m| m == &episode[0]), "the mask changed within an episode");
        assert!(episode[0].iter().any(|&p| p), "every modality was dropped");
        distinct.insert(episode[0].clone());
    }
    // Both single-modality masks and the full mask occur.
    assert_eq!(distinct.len(), 3);
    assert_eq!(runs, masks(DropoutMode::PerEpisode { p: 0.5.into() }, 7, 200, 5), "same seed, same masks");
}

/// A per-modality probability table, e.g. `{ image = 0.8, vec = 0.2 }`.
fn per_modality(probs: &[(&str, f64)]) -> DropProbability {
    DropProbability::PerModality(probs.iter().map(|&(m, p)| (m.to_string(), p)).collect())
}

#[test]
fn per_episode_dropout_with_a_probability_per_modality_drops_each_as_often_as_asked() {
    // Counter's modalities: image (index 0), vec (1). Drawn independently, both-dropped redrawn:
    // complete 0.2 * 0.8, vec alone 0.8 * 0.8, image alone 0.2 * 0.2, out of 1 - 0.8 * 0.2.
    let runs = masks(DropoutMode::PerEpisode { p: per_modality(&[("image", 0.8), ("vec", 0.2)]) }, 11, 4000, 0);
    let share = |mask: [bool; 2]| runs.iter().filter(|e| e[0] == mask).count() as f64 / runs.len() as f64;
    let kept = 1.0 - 0.8 * 0.2;
    for (mask, expected) in [([true, true], 0.16 / kept), ([false, true], 0.64 / kept), ([true, false], 0.04 / kept)] {
        assert!((share(mask) - expected).abs() < 0.025, "{mask:?}: {} against {expected}", share(mask));
    }
    // A modality the table does not name is never dropped.
    let vec_only = masks(DropoutMode::PerEpisode { p: per_modality(&[("vec", 0.7)]) }, 11, 300, 0);
    assert!(vec_only.iter().all(|e| e[0][0]), "image was dropped without being named");
    // The same probability for each modality, as a table, is the uniform `p`, draw for draw.
    let table = masks(DropoutMode::PerEpisode { p: per_modality(&[("vec", 0.5), ("image", 0.5)]) }, 7, 200, 5);
    assert_eq!(table, masks(DropoutMode::PerEpisode { p: 0.5.into() }, 7, 200, 5));
}

#[test]
fn per_step_dropout_with_a_probability_per_modality_drops_each_at_its_rate() {
    let runs = masks(
        DropoutMode::PerStep { p: per_modality(&[("image", 0.1), ("vec", 0.6)]), modalities: vec![] },
        5,
        20,
        199,
    );
    let steps = runs.concat();
    for (i, expected) in [(0, 0.1), (1, 0.6)] {
        let missing = steps.iter().filter(|m| !m[i]).count() as f64 / steps.len() as f64;
        assert!((missing - expected).abs() < 0.03, "modality {i}: dropped {missing} against {expected}");
    }
}

#[test]
fn dropout_probability_tables_reject_unknown_modalities_bad_values_and_double_naming() {
    let error = |mode| SensorDropout::new(Counter::new(None), mode).err().expect("accepted").to_string();
    let text = error(DropoutMode::PerEpisode { p: per_modality(&[("sound", 0.5)]) });
    assert!(text.contains("sound") && text.contains("image") && text.contains("vec"), "{text}");
    let text = error(DropoutMode::PerStep { p: per_modality(&[("vec", 1.5)]), modalities: vec![] });
    assert!(text.contains("1.5") && text.contains("`vec`") && text.contains("outside [0, 1]"), "{text}");
    let text = error(DropoutMode::PerEpisode { p: per_modality(&[("vec", 1.0), ("image", 1.0)]) });
    assert!(text.contains("keeps at least one modality"), "{text}");
    let text = error(DropoutMode::PerStep { p: per_modality(&[("vec", 0.5)]), modalities: vec!["vec".into()] });
    assert!(text.contains("not both"), "{text}");
}

#[test]
fn sensor_dropout_parses_a_probability_or_a_table_from_toml_and_names_what_it_expected() {
    let parse = |text: &str| toml::from_str::<toml::Table>(text).unwrap()["d"].clone().try_into::<DropoutMode>();
    assert_eq!(parse("d = { mode = \"per-episode\", p = 0.5 }").unwrap(), DropoutMode::PerEpisode { p: 0.5.into() });
    assert_eq!(
        parse("d = { mode = \"per-episode\", p = { pixels = 0.6, sound = 0.4 } }").unwrap(),
        DropoutMode::PerEpisode { p: per_modality(&[("pixels", 0.6), ("sound", 0.4)]) }
    );
    let err = parse("d = { mode = \"per-episode\", p = \"half\" }").unwrap_err().to_string();
    assert!(err.contains("a probability (e.g. p = 0.5) or a table of probabilities per modality"), "{err}");
}

#[test]
fn per_step_dropout_drops_each_modality_with_probability_p() {
    let count_missing = |p: f64| {
        masks(DropoutMode::PerStep { p: p.into(), modalities: vec![] }, 3, 20, 99)
            .concat()
            .concat()
            .iter()
            .filter(|&&x| !x)
            .count()
    };
    assert_eq!(count_missing(0.0), 0);
    assert_eq!(count_missing(1.0), 20 * 100 * 2);
    let missing = count_missing(0.3) as f64 / (20.0 * 100.0 * 2.0);
    assert!((missing - 0.3).abs() < 0.03, "dropped fraction {missing}");
    let runs = masks(DropoutMode::PerStep { p: 0.3.into(), modalities: vec![] }, 3, 5, 50);
    assert_eq!(
        runs,
        masks(DropoutMode::PerStep { p: 0.3.into(), modalities: vec![] }, 3, 5, 50),
        "same seed, same drops"
    );
    assert_ne!(
        runs,
        masks(DropoutMode::PerStep { p: 0.3.into(), modalities: vec![] }, 4, 5, 50),
        "another seed, other drops"
    );
}

/// The pendulum with pixels (binary: values 0 and 1) and sound (f32 in [0, 1]), and a twin with
/// the same seed whose observations are the clean ones.
fn noisy_and_clean_pendulums(modality: &str, sigma: f64) -> (SensorNoise<Box<dyn Env>>, Box<dyn Env>) {
    let params = toml::Table::new();
    let noisy = SensorNoise::new(m3ixup_envs::make("multimodal-pendulum", &params).unwrap(), modality, sigma).unwrap();
    (noisy, m3ixup_envs::make("multimodal-pendulum", &params).unwrap())
}

/// (noisy, clean) values of one modality over `steps` steps after a reset with `seed`.
fn noisy_and_clean_values(modality: &str, sigma: f64, seed: u64, steps: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut noisy, mut clean) = noisy_and_clean_pendulums(modality, sigma);
    let space = clean.observation_space().clone();
    let index = space.require(modality).unwrap();
    let (mut out_noisy, mut out_clean) = (Vec::new(), Vec::new());
    let mut push = |n: &Obs, c: &Obs| {
        n.check(&space).unwrap();
        assert!(n.present[index], "a noisy sensor stays marked present");
        let values = |d: &ModalityData| (0..d.len()).map(|i| d.get_f32(i) as f64).collect::<Vec<_>>();
        out_noisy.extend(values(&n.data[index]));
        out_clean.extend(values(&c.data[index]));
    };
    push(&noisy.reset(Some(seed)).unwrap().0, &clean.reset(Some(seed)).unwrap().0);
    for t in 0..steps {
        let a = act(((t % 7) as f32 - 3.0) / 3.0);
        push(&noisy.step(&a).unwrap().obs, &clean.step(&a).unwrap().obs);
    }
    (out_noisy, out_clean)
}

#[test]
fn sensor_noise_flips_binary_pixels_at_the_rate_the_clipped_noise_implies() {
    // Pixels are 0 or 1; noise N(0, 0.1) clipped to [0, 1] has mean 0.1 / sqrt(2 pi) = 0.0399
    // on a 0 pixel (and 1 - 0.0399 on a 1 pixel), which stochastic rounding keeps: about 4% of
    // the pixels flip. Rounding to nearest flipped about one in two million.
    let (noisy, clean) = noisy_and_clean_values("pixels", 0.1, 7, 20);
    assert!(noisy.iter().all(|&v| v == 0.0 || v == 1.0));
    let flipped = noisy.iter().zip(&clean).filter(|(n, c)| n != c).count() as f64 / noisy.len() as f64;
    let expected = 0.1 / (2.0 * std::f64::consts::PI).sqrt();
    assert!((flipped - expected).abs() < 0.005, "flipped {flipped:.4}, expected {expected:.4}");
    // Both ways: the lit pendulum loses pixels too.
    let lost = noisy.iter().zip(&clean).filter(|(n, c)| **c == 1.0 && **n == 0.0).count();
    assert!(lost > 0);
}

#[test]
fn sensor_noise_on_floats_has_the_requested_scale_and_stays_in_bounds() {
    // Sound values lie in [0, 1]; with sigma 0.02 the noise is rarely clipped.
    let (noisy, clean) = noisy_and_clean_values("sound", 0.02, 3, 200);
    assert!(noisy.iter().all(|&v| (0.0..=1.0).contains(&v)));
    let diffs: Vec<f64> =
        noisy.iter().zip(&clean).filter(|(_, c)| **c > 0.1 && **c < 0.9).map(|(n, c)| n - c).collect();
    assert!(diffs.len() > 500, "{} unclipped values", diffs.len());
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let std = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / diffs.len() as f64).sqrt();
    assert!(mean.abs() < 0.003 && (std - 0.02).abs() < 0.002, "mean {mean:.4}, std {std:.4}");
}

#[test]
fn sensor_noise_is_reproducible_from_the_reset_seed_and_zero_sigma_changes_nothing() {
    assert_eq!(noisy_and_clean_values("pixels", 0.1, 5, 3), noisy_and_clean_values("pixels", 0.1, 5, 3));
    assert_ne!(noisy_and_clean_values("pixels", 0.1, 5, 3).0, noisy_and_clean_values("pixels", 0.1, 6, 3).0);
    let (noisy, clean) = noisy_and_clean_values("sound", 0.0, 5, 3);
    assert_eq!(noisy, clean);
    let env = m3ixup_envs::make("multimodal-pendulum", &toml::Table::new()).unwrap();
    assert!(SensorNoise::new(env, "sound", -0.1).is_err());
}

#[test]
fn sensor_noise_on_an_unbounded_modality_is_refused_by_name_unless_given_a_finite_scale() {
    let unbounded = || Counter::with_vec_bounds(None, f32::NEG_INFINITY, f32::INFINITY);
    let err = SensorNoise::new(unbounded(), "vec", 0.1).err().expect("refused").to_string();
    assert!(err.contains("`vec` element 0") && err.contains("[-inf, inf]"), "{err}");
    assert!(SensorNoise::new(unbounded(), "image", 0.1).is_ok(), "the bounded modality is fine");

    let mut noisy = SensorNoise::with_scale(unbounded(), "vec", 0.1, vec![10.0, 10.0]).unwrap();
    let mut values = Vec::new();
    noisy.reset(Some(4)).unwrap();
    for _ in 0..400 {
        let obs = noisy.step(&Action::Continuous(vec![0.0])).unwrap().obs;
        let ModalityData::F32(v) = &obs.data[1] else { panic!("vec is f32") };
        values.extend(v.iter().map(|&x| x as f64));
    }
    assert!(values.iter().all(|x| x.is_finite()));
    // Counter's vec is (t, -t): the noise is what is left after removing it.
    let residuals: Vec<f64> =
        values.chunks(2).enumerate().flat_map(|(t, p)| [p[0] - (t + 1) as f64, p[1] + (t + 1) as f64]).collect();
    let std = (residuals.iter().map(|r| r * r).sum::<f64>() / residuals.len() as f64).sqrt();
    assert!((std - 1.0).abs() < 0.1, "sigma 0.1 x scale 10 gives std 1: {std:.3}");

    let err = SensorNoise::with_scale(unbounded(), "vec", 0.1, vec![f64::INFINITY, 1.0]).err().unwrap().to_string();
    assert!(err.contains("`vec` element 0") && err.contains("finite"), "{err}");
    let err = SensorNoise::with_scale(unbounded(), "vec", 0.1, vec![1.0]).err().unwrap().to_string();
    assert!(err.contains("2 values"), "{err}");
}

#[test]
fn stale_sensor_repeats_the_episodes_first_observation_of_that_modality_only() {
    let params = toml::Table::new();
    let mut env = StaleSensor::new(m3ixup_envs::make("multimodal-pendulum", &params).unwrap(), "sound").unwrap();
    let (first, _) = env.reset(Some(1)).unwrap();
    let (sound, pixels) =
        (env.observation_space().require("sound").unwrap(), env.observation_space().require("pixels").unwrap());
    let mut pixels_changed = false;
    for _ in 0..10 {
        let obs = env.step(&act(1.0)).unwrap().obs;
        assert_eq!(obs.data[sound], first.data[sound]);
        assert!(obs.present[sound]);
        pixels_changed |= obs.data[pixels] != first.data[pixels];
    }
    assert!(pixels_changed, "the other sensors keep updating");
    // The next episode freezes on its own first observation.
    let (second, _) = env.reset(Some(2)).unwrap();
    assert_eq!(env.step(&act(0.0)).unwrap().obs.data[sound], second.data[sound]);
}
