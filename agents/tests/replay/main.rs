//! The replay buffer: frames shared between stacked observations (and so memory), seeded
//! sampling, and `terminated` kept apart from `truncated`.

use m3ixup_agents::algorithms::replay::{next_observations, ReplayBuffer};
use m3ixup_envs::{
    frame_stack, make, BatchActions, BatchObs, DType, ModalityData, ModalitySpec, ObsSpace, VecEnv, VecEnvConfig,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// One stored transition, copied whole (the reference the shared frames must reproduce).
#[derive(Clone, Debug, PartialEq)]
struct Copied {
    obs: BatchObs,
    next_obs: BatchObs,
    action: Vec<f32>,
    reward: f32,
    terminated: bool,
    truncated: bool,
}

fn row(batch: &BatchObs, i: usize) -> BatchObs {
    let obs = batch.env_obs(i);
    BatchObs { buffers: obs.data, present: obs.present }
}

/// Steps `num_envs` multimodal pendulums (short episodes, optional sensor dropout) with random
/// actions into a buffer of `capacity`, and returns it with every transition copied whole, per
/// sub-environment in order.
fn fill(params: &str, num_envs: usize, capacity: usize, steps: usize) -> (ReplayBuffer, Vec<Vec<Copied>>) {
    let params: toml::Table = toml::from_str(params).unwrap();
    let k = frame_stack("multimodal-pendulum", &params).unwrap();
    let config = VecEnvConfig { num_envs, workers: 0, seed: 3, ..VecEnvConfig::default() };
    let mut envs = VecEnv::new(config, |_| make("multimodal-pendulum", &params)).unwrap();
    let space = envs.observation_space().clone();
    let action_space = envs.action_space().clone();
    let mut buffer = ReplayBuffer::new(&space, 1, num_envs, capacity, k).unwrap();
    let mut obs = envs.reset(Some(3)).unwrap().clone();
    buffer.reset(&obs).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut copies = vec![Vec::new(); num_envs];
    for _ in 0..steps {
        let actions = BatchActions::sample(&action_space, num_envs, &mut rng);
        let BatchActions::Continuous(raw) = &actions else { panic!("the pendulum is continuous") };
        let step = envs.step(&actions).unwrap().clone();
        let next = next_observations(&step);
        buffer.add(raw, &step.rewards, &step.terminated, &step.truncated, &next, &step.obs).unwrap();
        for i in 0..num_envs {
            copies[i].push(Copied {
                obs: row(&obs, i),
                next_obs: row(&next, i),
                action: vec![raw[i]],
                reward: step.rewards[i] as f32,
                terminated: step.terminated[i],
                truncated: step.truncated[i],
            });
        }
        obs = step.obs.clone();
    }
    (buffer, copies)
}

fn stored(buffer: &ReplayBuffer, index: usize) -> Copied {
    let b = buffer.gather(&[index]);
    Copied {
        obs: b.obs,
        next_obs: b.next_obs,
        action: b.actions,
        reward: b.rewards[0],
        terminated: b.terminated[0],
        truncated: b.truncated[0],
    }
}

#[test]
fn observations_rebuilt_from_shared_frames_equal_the_stacks_the_environment_gave() {
    // 6-step episodes: several episode starts (repeated first frames) and final observations.
    let (buffer, copies) = fill("max_episode_steps = 6", 2, 1000, 20);
    assert_eq!(buffer.len(), 40);
    let expected: Vec<Copied> = copies.into_iter().flatten().collect();
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&stored(&buffer, i), want, "transition {i}");
    }
    assert!(expected.iter().any(|c| c.truncated), "the test should cross episode ends");
}

#[test]
fn frames_of_dropped_modalities_are_filled_in_from_later_observations() {
    // Per-step sensor dropout: an absent modality's frame comes back in the next stack.
    let (buffer, copies) =
        fill("max_episode_steps = 7\nsensor_dropout = { mode = \"per-step\", p = 0.4 }", 2, 1000, 25);
    let expected: Vec<Copied> = copies.into_iter().flatten().collect();
    assert!(expected.iter().any(|c| c.obs.present.contains(&false)), "the test should drop sensors");
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&stored(&buffer, i), want, "transition {i}");
    }
}

#[test]
fn a_full_buffer_keeps_the_newest_transitions() {
    // 20-step episodes: the kept 8 cross an episode end.
    let (buffer, copies) = fill("max_episode_steps = 20", 1, 8, 24);
    assert_eq!(buffer.len(), 8);
    assert_eq!(buffer.capacity(), 8);
    for (i, want) in copies[0][16..].iter().enumerate() {
        assert_eq!(&stored(&buffer, i), want, "transition {i}");
    }
}

#[test]
fn sampling_is_uniform_and_reproducible_from_its_seed() {
    let (buffer, _) = fill("max_episode_steps = 9", 2, 1000, 30);
    let a = buffer.sample(64, &mut StdRng::seed_from_u64(11)).unwrap();
    let b = buffer.sample(64, &mut StdRng::seed_from_u64(11)).unwrap();
    let c = buffer.sample(64, &mut StdRng::seed_from_u64(12)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 64);
    // Every transition is drawn about equally often: 60 transitions, 60,000 draws.
    let mut counts = vec![0usize; buffer.len()];
    let mut rng = StdRng::seed_from_u64(13);
    for _ in 0..1000 {
        let batch = buffer.sample(60, &mut rng).unwrap();
        for r in &batch.rewards {
            // Rewards are distinct floats here: find the transition each one came from.
            let i = (0..buffer.len()).find(|&i| buffer.gather(&[i]).rewards[0] == *r).unwrap();
            counts[i] += 1;
        }
    }
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(*min > 800 && *max < 1200, "counts range {min}..{max} (expected about 1000 each)");
}

fn tiny_space() -> ObsSpace {
    ObsSpace::new([
        ("pixels", ModalitySpec::uniform(&[2, 1, 2], DType::U8, 0.0, 255.0)),
        ("sound", ModalitySpec::uniform(&[2], DType::F32, -1.0, 1.0)),
    ])
    .unwrap()
}

/// A stacked observation of frames `a` (older) and `b` (newer): pixels (f, f+1), sound f.
fn stacked(a: u8, b: u8) -> BatchObs {
    BatchObs {
        buffers: vec![ModalityData::U8(vec![a, a + 1, b, b + 1]), ModalityData::F32(vec![a as f32, b as f32])],
        present: vec![true, true],
    }
}

#[test]
fn terminated_and_truncated_are_kept_apart() {
    let mut buffer = ReplayBuffer::new(&tiny_space(), 1, 1, 16, 2).unwrap();
    buffer.reset(&stacked(10, 10)).unwrap();
    // Step 1 continues; step 2 terminates (final frame 30, new episode at 50); step 3 is cut.
    buffer.add(&[0.1], &[1.0], &[false], &[false], &stacked(10, 20), &stacked(10, 20)).unwrap();
    buffer.add(&[0.2], &[2.0], &[true], &[false], &stacked(20, 30), &stacked(50, 50)).unwrap();
    buffer.add(&[0.3], &[3.0], &[false], &[true], &stacked(50, 60), &stacked(70, 70)).unwrap();
    let all = buffer.gather(&[0, 1, 2]);
    assert_eq!(all.terminated, vec![false, true, false]);
    assert_eq!(all.truncated, vec![false, false, true]);
    assert_eq!(all.rewards, vec![1.0, 2.0, 3.0]);
    assert_eq!(all.actions, vec![0.1, 0.2, 0.3]);
    // The terminated transition's next observation is its final one, not the new episode's.
    assert_eq!(row(&all.next_obs, 1), stacked(20, 30));
    assert_eq!(row(&all.obs, 2), stacked(50, 50));
    assert_eq!(row(&all.next_obs, 2), stacked(50, 60));
}

#[test]
fn an_observation_that_does_not_continue_the_stack_is_an_error_naming_the_modality() {
    let mut buffer = ReplayBuffer::new(&tiny_space(), 1, 1, 16, 2).unwrap();
    buffer.reset(&stacked(10, 10)).unwrap();
    // The older frame should be 10.
    let err = buffer.add(&[0.0], &[0.0], &[false], &[false], &stacked(11, 20), &stacked(11, 20)).unwrap_err();
    assert!(err.to_string().contains("`pixels`") && err.to_string().contains("share_frames"), "{err}");
    // Whole observations (frame_stack 1) take anything.
    let mut whole = ReplayBuffer::new(&tiny_space(), 1, 1, 16, 1).unwrap();
    whole.reset(&stacked(10, 10)).unwrap();
    whole.add(&[0.0], &[0.0], &[false], &[false], &stacked(11, 20), &stacked(11, 20)).unwrap();
    assert_eq!(row(&whole.gather(&[0]).next_obs, 0), stacked(11, 20));
}

#[test]
fn memory_per_transition_is_one_frame_not_a_stack() {
    let params = toml::Table::new();
    let space = make("multimodal-pendulum", &params).unwrap().observation_space().clone();
    let k = frame_stack("multimodal-pendulum", &params).unwrap();
    assert_eq!(k, 2);
    let capacity = 10_000;
    let shared = ReplayBuffer::new(&space, 1, 4, capacity, k).unwrap();
    let whole = ReplayBuffer::new(&space, 1, 4, capacity, 1).unwrap();
    let per_transition = shared.bytes() as f64 / capacity as f64;
    // The module documentation's figure: 1.06 x (3,600 + 24 + 12) + 20 = 3,887 bytes.
    let slots = (2500 + 2500 / 16 + k + 1) as f64 / 2500.0;
    let documented = slots * (3600.0 + 6.0 * 4.0 + 2.0 * 2.0 + 8.0) + 16.0 + 4.0;
    assert!(
        (per_transition - documented).abs() < 1.0,
        "{per_transition} bytes per transition, documented {documented}"
    );
    assert!(per_transition < 3_900.0, "{per_transition}");
    // Stored stacks would take about twice as much: 1.06 x (7,248 + 12) + 20 = 7,739 bytes.
    let stacks = whole.bytes() as f64 / capacity as f64;
    assert!((stacks - 7_739.0).abs() < 2.0, "{stacks}");
    assert!(per_transition < 0.55 * stacks, "shared {per_transition} vs stacks {stacks}");
}

#[test]
fn a_buffer_saved_and_restored_samples_what_the_original_samples_and_keeps_filling_alike() {
    // Sensor dropout and 6-step episodes: absent frames and episode ends are in the saved state.
    let params = "max_episode_steps = 6\nsensor_dropout = { mode = \"per-step\", p = 0.4 }";
    let (original, _) = fill(params, 2, 30, 25); // full: the rings have wrapped
    let bytes = rmp_serde::to_vec(&original).unwrap();
    let (mut restored, _) = fill(params, 2, 30, 3); // another buffer of the same layout
    restored.restore(rmp_serde::from_slice(&bytes).unwrap()).unwrap();
    assert_eq!(restored.len(), original.len());
    for i in 0..original.len() {
        assert_eq!(stored(&restored, i), stored(&original, i), "transition {i}");
    }
    let draw = |b: &ReplayBuffer| b.sample(32, &mut StdRng::seed_from_u64(4)).unwrap();
    assert_eq!(draw(&restored), draw(&original));
    // u8 frames as MessagePack binary: a buffer twice the size saves about one byte more per
    // byte it holds, not two (values of 128 and up as numbers), beside what does not grow with
    // the capacity (the observation space's bounds).
    let (double, _) = fill(params, 2, 60, 45); // full too: every slot holds a rendered frame
    let saved_growth = rmp_serde::to_vec(&double).unwrap().len() - bytes.len();
    let growth = double.bytes() - original.bytes();
    assert!(saved_growth < growth * 11 / 10, "{saved_growth} more bytes saved for {growth} more bytes held");

    // Another capacity is another layout: refused, naming both.
    let (mut other, _) = fill(params, 2, 40, 3);
    let err = other.restore(rmp_serde::from_slice(&bytes).unwrap()).unwrap_err().to_string();
    assert!(err.contains("capacity 30") && err.contains("capacity 40"), "{err}");
}
