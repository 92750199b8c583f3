//! Behaviour of `VecEnv`: same-step autoreset, seeding, inline/threaded equivalence, batch
//! layout, failures that never hang. Everything lives in `mod vector` so that
//! `cargo test -p m3ixup-envs vector` selects these tests.

mod vector {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use m3ixup_envs::{
        validate_action, Action, ActionSpace, BatchActions, DType, Env, EnvError, Info, ModalityData, ModalitySpec,
        Obs, ObsSpace, Step, VecEnv, VecEnvConfig, VecStep,
    };
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fault {
        None,
        /// Panics on its n-th step (counted over all episodes, from 1).
        PanicAt(usize),
        ErrorAt(usize),
        HangAt(usize),
    }

    /// A counter env: u8 image `camera` [1, 2, 2] and f32 vector `state` [3], both mixing the
    /// step count, the episode number and its random stream. Episodes last `len` steps and end
    /// terminated (even episodes) or truncated (odd ones).
    struct Counter {
        space: ObsSpace,
        action_space: ActionSpace,
        len: usize,
        fault: Fault,
        rng: StdRng,
        seed: u64,
        t: usize,
        episode: u64,
        steps: usize,
        drops: Option<Arc<AtomicUsize>>,
    }

    impl Counter {
        fn new(len: usize, discrete: bool) -> Self {
            let space = ObsSpace::new([
                ("state", ModalitySpec::uniform(&[3], DType::F32, -1e9, 1e9)),
                ("camera", ModalitySpec::uniform(&[1, 2, 2], DType::U8, 0.0, 255.0)),
            ])
            .unwrap();
            let action_space = if discrete {
                ActionSpace::Discrete(3)
            } else {
                ActionSpace::Box { low: vec![-1.0; 2], high: vec![1.0; 2] }
            };
            Self {
                space,
                action_space,
                len,
                fault: Fault::None,
                rng: StdRng::seed_from_u64(0),
                seed: 0,
                t: 0,
                episode: 0,
                steps: 0,
                drops: None,
            }
        }

        fn with_fault(mut self, fault: Fault) -> Self {
            self.fault = fault;
            self
        }

        fn obs(&mut self) -> Obs {
            let camera = vec![self.t as u8, self.episode as u8, self.rng.gen(), self.rng.gen()];
            let state = vec![self.t as f32, self.rng.gen::<f32>(), self.seed as f32];
            Obs::new(vec![ModalityData::U8(camera), ModalityData::F32(state)])
        }
    }

    impl Drop for Counter {
        fn drop(&mut self) {
            if let Some(d) = &self.drops {
                d.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    impl Env for Counter {
        fn name(&self) -> &str {
            "counter"
        }
        fn observation_space(&self) -> &ObsSpace {
            &self.space
        }
        fn action_space(&self) -> &ActionSpace {
            &self.action_space
        }
        fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
            match seed {
                Some(s) => {
                    self.rng = StdRng::seed_from_u64(s);
                    self.seed = s;
                    self.episode = 0;
                }
                None => self.episode += 1,
            }
            self.t = 0;
            let mut info = Info::new();
            info.insert("reset".into(), 1.0);
            Ok((self.obs(), info))
        }
        fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
            validate_action("counter", &self.action_space, action)?;
            self.steps += 1;
            match self.fault {
                Fault::PanicAt(n) if n == self.steps => panic!("counter exploded at step {n}"),
                Fault::ErrorAt(n) if n == self.steps => {
                    return Err(EnvError::Other {
                        env: "counter".into(),
                        message: format!("sensor failure at step {n}"),
                    })
                }
                Fault::HangAt(n) if n == self.steps => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
                _ => {}
            }
            self.t += 1;
            let a = match action {
                Action::Continuous(v) => v[0] as f64 + 10.0 * v[1] as f64,
                Action::Discrete(k) => *k as f64,
            };
            let reward = self.t as f64 + 100.0 * a + self.rng.gen::<f64>();
            let done = self.t >= self.len;
            let mut info = Info::new();
            info.insert("t".into(), self.t as f64);
            Ok(Step {
                obs: self.obs(),
                reward,
                terminated: done && self.episode.is_multiple_of(2),
                truncated: done && !self.episode.is_multiple_of(2),
                info,
            })
        }
    }

    /// Episode length of sub-environment `i`: different lengths make episodes end out of step.
    fn len_of(i: usize) -> usize {
        2 + i % 4
    }

    fn config(num_envs: usize, workers: usize) -> VecEnvConfig {
        VecEnvConfig { num_envs, workers, seed: 7, step_timeout: Duration::from_secs(10) }
    }

    fn counters(num_envs: usize, workers: usize) -> VecEnv {
        VecEnv::new(config(num_envs, workers), |i| Ok(Box::new(Counter::new(len_of(i), false)) as Box<dyn Env>))
            .unwrap()
    }

    /// Deterministic actions that differ per step and per environment.
    fn actions(num_envs: usize, step: usize) -> BatchActions {
        BatchActions::Continuous((0..num_envs * 2).map(|k| ((k * 7 + step * 3) % 11) as f32 / 10.0 - 0.5).collect())
    }

    fn env_action(batch: &BatchActions, i: usize) -> Action {
        match batch {
            BatchActions::Continuous(v) => Action::Continuous(v[i * 2..i * 2 + 2].to_vec()),
            BatchActions::Discrete(v) => Action::Discrete(v[i]),
        }
    }

    /// Every float as its bit pattern, so "equal" means bit-identical.
    fn bits(step: &VecStep) -> (Vec<Vec<u32>>, Vec<u64>, String) {
        let obs = step
            .obs
            .buffers
            .iter()
            .map(|b| match b {
                ModalityData::U8(v) => v.iter().map(|&x| x as u32).collect(),
                ModalityData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            })
            .collect();
        let rewards = step.rewards.iter().map(|r| r.to_bits()).collect();
        let rest = format!(
            "{:?} {:?} {:?} {:?} {:?}",
            step.obs.present, step.terminated, step.truncated, step.infos, step.final_obs
        );
        (obs, rewards, rest)
    }

    #[test]
    fn same_step_autoreset_keeps_the_final_observation() {
        for workers in [0, 2] {
            let n = 3;
            let mut venv = counters(n, workers);
            venv.reset(Some(40)).unwrap();
            let mut refs: Vec<Counter> = (0..n).map(|i| Counter::new(len_of(i), false)).collect();
            for (i, r) in refs.iter_mut().enumerate() {
                r.reset(Some(40 + i as u64)).unwrap();
            }
            let mut seen = [0usize; 2];
            for s in 0..12 {
                let a = actions(n, s);
                let step = venv.step(&a).unwrap().clone();
                for (i, r) in refs.iter_mut().enumerate() {
                    let expected = r.step(&env_action(&a, i)).unwrap();
                    assert_eq!(step.rewards[i], expected.reward, "reward of the finishing step");
                    assert_eq!(step.terminated[i], expected.terminated);
                    assert_eq!(step.truncated[i], expected.truncated);
                    assert_eq!(step.infos[i], expected.info, "info of the finishing step");
                    if expected.done() {
                        seen[usize::from(expected.truncated)] += 1;
                        assert_eq!(step.final_obs[i].as_ref(), Some(&expected.obs), "final obs kept");
                        let (first, _) = r.reset(None).unwrap();
                        assert_eq!(step.obs.env_obs(i), first, "batch obs is the new episode's first");
                        assert_eq!(step.obs.env_obs(i).data[1].as_f32().unwrap()[0], 0.0, "t restarts at 0");
                    } else {
                        assert_eq!(step.final_obs[i], None);
                        assert_eq!(step.obs.env_obs(i), expected.obs);
                    }
                }
            }
            assert!(seen[0] > 0 && seen[1] > 0, "both terminated and truncated endings were exercised: {seen:?}");
        }
    }

    #[test]
    fn sub_environment_i_is_seeded_seed_plus_i() {
        for workers in [0, 2] {
            let n = 4;
            let mut venv = counters(n, workers);
            // reset(None) before any seeded reset uses config.seed + i.
            let obs = venv.reset(None).unwrap().clone();
            for i in 0..n {
                let (expected, _) = Counter::new(len_of(i), false).reset(Some(7 + i as u64)).unwrap();
                assert_eq!(obs.env_obs(i), expected);
            }
            let obs = venv.reset(Some(100)).unwrap().clone();
            for i in 0..n {
                assert_eq!(obs.env_obs(i).data[1].as_f32().unwrap()[2], (100 + i) as f32);
                let (expected, _) = Counter::new(len_of(i), false).reset(Some(100 + i as u64)).unwrap();
                assert_eq!(obs.env_obs(i), expected);
            }
            // A later reset(None) continues each stream instead of reseeding.
            let mut refs: Vec<Counter> = (0..n).map(|i| Counter::new(len_of(i), false)).collect();
            let obs = venv.reset(None).unwrap().clone();
            for (i, r) in refs.iter_mut().enumerate() {
                r.reset(Some(100 + i as u64)).unwrap();
                assert_eq!(obs.env_obs(i), r.reset(None).unwrap().0);
            }
            // The addition wraps.
            let obs = venv.reset(Some(u64::MAX)).unwrap().clone();
            assert_eq!(obs.env_obs(1), Counter::new(len_of(1), false).reset(Some(0)).unwrap().0);
        }
    }

    #[test]
    fn reset_each_seeds_each_sub_environment_with_its_own_seed_or_continues_it() {
        for workers in [0, 2] {
            let n = 4;
            let seeds = [Some(42), None, Some(3), Some(42)];
            // Before any reset, an unseeded one starts from config.seed + i, as reset(None) does.
            let mut venv = counters(n, workers);
            let obs = venv.reset_each(&seeds).unwrap().clone();
            for (i, seed) in seeds.iter().enumerate() {
                let (expected, _) = Counter::new(len_of(i), false).reset(seed.or(Some(7 + i as u64))).unwrap();
                assert_eq!(obs.env_obs(i), expected, "env {i}");
            }
            // Later, an unseeded one continues its stream.
            let obs = venv.reset_each(&[Some(5), Some(6), None, Some(8)]).unwrap().clone();
            let mut third = Counter::new(len_of(2), false);
            third.reset(Some(3)).unwrap();
            assert_eq!(obs.env_obs(2), third.reset(None).unwrap().0);
            assert_eq!(obs.env_obs(0), Counter::new(len_of(0), false).reset(Some(5)).unwrap().0);
            // Consecutive seeds are reset(Some(base)).
            let each = venv.reset_each(&[Some(100), Some(101), Some(102), Some(103)]).unwrap().clone();
            assert_eq!(each, venv.reset(Some(100)).unwrap().clone());
            let err = venv.reset_each(&[Some(1)]).unwrap_err().to_string();
            assert!(err.contains("1 seeds for 4 environments"), "{err}");
            assert!(!venv.is_poisoned(), "a wrong seed count is refused before any reset");
        }
    }

    #[test]
    fn inline_and_threaded_runs_are_bit_identical() {
        let n = 7;
        let run = |workers: usize| {
            let mut venv = counters(n, workers);
            let mut trace = vec![];
            venv.reset(Some(3)).unwrap();
            for s in 0..80 {
                if s == 40 {
                    venv.reset(None).unwrap();
                }
                trace.push(bits(venv.step(&actions(n, s)).unwrap()));
            }
            trace
        };
        let inline = run(0);
        for workers in [1, 2, 3] {
            assert!(run(workers) == inline, "{workers} workers differ from the inline run");
        }
    }

    #[test]
    fn batch_buffers_are_contiguous_env_major_and_match_each_env() {
        let n = 5;
        let mut venv = counters(n, 2);
        let mut refs: Vec<Counter> = (0..n).map(|i| Counter::new(len_of(i), false)).collect();
        venv.reset(Some(9)).unwrap();
        for (i, r) in refs.iter_mut().enumerate() {
            r.reset(Some(9 + i as u64)).unwrap();
        }
        let a = actions(n, 0);
        let step = venv.step(&a).unwrap();
        let batch = &step.obs;
        assert_eq!((batch.num_envs(), batch.num_modalities()), (n, 2));
        // Modalities in the space's (sorted) order: camera (u8, 4 values), then state (f32, 3).
        assert_eq!((batch.numel(0), batch.numel(1)), (4, 3));
        let camera = batch.modality_u8(0).expect("camera is u8");
        let state = batch.modality_f32(1).expect("state is f32");
        assert!(batch.modality_f32(0).is_none() && batch.modality_u8(1).is_none());
        assert_eq!((camera.len(), state.len(), batch.present.len()), (n * 4, n * 3, n * 2));
        for (i, r) in refs.iter_mut().enumerate() {
            let own = r.step(&env_action(&a, i)).unwrap().obs;
            assert_eq!(&camera[i * 4..(i + 1) * 4], own.data[0].as_u8().unwrap());
            assert_eq!(&state[i * 3..(i + 1) * 3], own.data[1].as_f32().unwrap());
            assert_eq!(batch.env_present(i), &[true, true]);
            assert_eq!(batch.env_obs(i), own);
        }
    }

    fn faulty(n: usize, workers: usize, bad: usize, fault: Fault, timeout: Duration) -> VecEnv {
        let cfg = VecEnvConfig { step_timeout: timeout, ..config(n, workers) };
        VecEnv::new(cfg, move |i| {
            let env = Counter::new(100, false);
            Ok(Box::new(if i == bad { env.with_fault(fault) } else { env }) as Box<dyn Env>)
        })
        .unwrap()
    }

    fn assert_poisoned(venv: &mut VecEnv) {
        assert!(venv.is_poisoned());
        let e = venv.step(&actions(venv.num_envs(), 0)).unwrap_err();
        assert!(e.to_string().contains("poisoned"), "{e}");
        let e = venv.reset(Some(1)).unwrap_err();
        assert!(e.to_string().contains("poisoned"), "{e}");
    }

    #[test]
    fn panicking_sub_env_reports_its_index_instead_of_hanging() {
        // Inline; in a worker thread (env 2); in the calling thread's chunk while a worker runs (env 0).
        for (workers, bad) in [(0, 2), (2, 2), (2, 0)] {
            let mut venv = faulty(4, workers, bad, Fault::PanicAt(3), Duration::from_secs(10));
            venv.reset(Some(0)).unwrap();
            venv.step(&actions(4, 0)).unwrap();
            venv.step(&actions(4, 1)).unwrap();
            let e = venv.step(&actions(4, 2)).unwrap_err();
            match &e {
                EnvError::SubEnv { index, cause } if *index == bad => {
                    assert!(cause.contains("counter exploded at step 3"), "{cause}")
                }
                other => panic!("expected SubEnv for index {bad}, got {other:?}"),
            }
            assert_poisoned(&mut venv);
        }
    }

    #[test]
    fn failing_sub_env_reports_its_index() {
        for workers in [0, 3] {
            let mut venv = faulty(7, workers, 5, Fault::ErrorAt(2), Duration::from_secs(10));
            venv.reset(Some(0)).unwrap();
            venv.step(&actions(7, 0)).unwrap();
            match venv.step(&actions(7, 1)).unwrap_err() {
                EnvError::SubEnv { index: 5, cause } => assert!(cause.contains("sensor failure at step 2"), "{cause}"),
                other => panic!("expected SubEnv for index 5, got {other:?}"),
            }
            assert_poisoned(&mut venv);
        }
    }

    #[test]
    fn stuck_sub_env_becomes_a_worker_error_after_the_timeout() {
        // N = 7 over 3 workers: chunks 0..3, 3..5, 5..7; env 4 hangs, in worker 1.
        let timeout = Duration::from_millis(300);
        let mut venv = faulty(7, 3, 4, Fault::HangAt(1), timeout);
        venv.reset(Some(0)).unwrap();
        let start = Instant::now();
        let e = venv.step(&actions(7, 0)).unwrap_err();
        let waited = start.elapsed();
        assert!(matches!(e, EnvError::Worker { worker: 1, first: 3, end: 5, .. }), "{e:?}");
        assert!(waited >= timeout && waited < timeout * 5, "waited {waited:?}");
        assert_poisoned(&mut venv);
        let start = Instant::now();
        drop(venv); // must not join the stuck worker
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn wrong_action_batch_is_rejected_clearly_without_poisoning() {
        let mut venv = counters(3, 2);
        venv.reset(Some(0)).unwrap();
        let e = venv.step(&BatchActions::Continuous(vec![0.0; 5])).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, EnvError::InvalidAction { .. }), "{e:?}");
        assert!(msg.contains("expected 6") && msg.contains("got 5"), "{msg}");
        let e = venv.step(&BatchActions::Discrete(vec![0; 3])).unwrap_err();
        assert!(e.to_string().contains("discrete"), "{e}");
        // Nothing was stepped: the batch is still usable.
        assert!(!venv.is_poisoned());
        venv.step(&actions(3, 0)).unwrap();

        let mut venv = VecEnv::new(config(4, 2), |_| Ok(Box::new(Counter::new(3, true)) as Box<dyn Env>)).unwrap();
        venv.reset(Some(0)).unwrap();
        let e = venv.step(&BatchActions::Discrete(vec![0; 3])).unwrap_err();
        assert!(e.to_string().contains("expected 4") && e.to_string().contains("got 3"), "{e}");
    }

    #[test]
    fn discrete_actions_reach_their_own_env() {
        for workers in [0, 2] {
            let mut venv =
                VecEnv::new(config(4, workers), |_| Ok(Box::new(Counter::new(50, true)) as Box<dyn Env>)).unwrap();
            venv.reset(Some(0)).unwrap();
            let step = venv.step(&BatchActions::Discrete(vec![2, 0, 1, 2])).unwrap();
            let hundreds: Vec<i64> = step.rewards.iter().map(|r| (*r / 100.0).floor() as i64).collect();
            assert_eq!(hundreds, vec![2, 0, 1, 2]);
        }
    }

    #[test]
    fn invalid_action_inside_the_batch_names_the_env() {
        let mut venv = VecEnv::new(config(3, 1), |_| Ok(Box::new(Counter::new(5, true)) as Box<dyn Env>)).unwrap();
        venv.reset(Some(0)).unwrap();
        let e = venv.step(&BatchActions::Discrete(vec![0, 1, 7])).unwrap_err();
        assert!(matches!(&e, EnvError::SubEnv { index: 2, cause } if cause.contains("0..3")), "{e:?}");
    }

    #[test]
    fn config_errors_name_the_field() {
        let make = |_| Ok(Box::new(Counter::new(3, false)) as Box<dyn Env>);
        let err = |cfg| match VecEnv::new(cfg, make) {
            Err(EnvError::InvalidParam { param, .. }) => param,
            Err(other) => panic!("expected InvalidParam, got {other:?}"),
            Ok(_) => panic!("accepted a bad config"),
        };
        assert_eq!(err(config(0, 0)), "num_envs");
        assert_eq!(err(config(2, 3)), "workers");
        assert_eq!(err(VecEnvConfig { step_timeout: Duration::ZERO, ..config(2, 1) }), "step_timeout");
        let d = VecEnvConfig::default();
        assert_eq!((d.num_envs, d.workers, d.seed, d.step_timeout), (1, 0, 0, Duration::from_secs(60)));
        let venv = VecEnv::new(d, make).unwrap();
        assert_eq!((venv.num_envs(), venv.workers()), (1, 0));
    }

    #[test]
    fn mismatched_spaces_name_the_index() {
        let e = VecEnv::new(config(3, 0), |i| Ok(Box::new(Counter::new(3, i == 2)) as Box<dyn Env>))
            .err()
            .expect("mismatched action spaces are rejected");
        assert!(e.to_string().contains("sub-environment 2"), "{e}");
    }

    #[test]
    fn step_before_reset_is_an_error() {
        let mut venv = counters(2, 1);
        assert!(matches!(venv.step(&actions(2, 0)), Err(EnvError::NeedsReset { .. })));
    }

    #[test]
    fn drop_closes_workers_and_drops_every_env() {
        let drops = Arc::new(AtomicUsize::new(0));
        let d = drops.clone();
        let mut venv = VecEnv::new(config(5, 2), move |i| {
            let mut env = Counter::new(len_of(i), false);
            env.drops = Some(d.clone());
            Ok(Box::new(env) as Box<dyn Env>)
        })
        .unwrap();
        venv.reset(None).unwrap();
        venv.step(&actions(5, 0)).unwrap();
        drop(venv);
        assert_eq!(drops.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn workers_wake_after_idling_and_the_batch_can_change_threads() {
        let n = 4;
        let mut venv = counters(n, 2);
        let mut reference = counters(n, 0);
        venv.reset(Some(5)).unwrap();
        reference.reset(Some(5)).unwrap();
        for s in 0..6 {
            // Idle long enough for the workers to stop polling and park.
            std::thread::sleep(Duration::from_millis(5));
            let expected = bits(reference.step(&actions(n, s)).unwrap());
            // Step from another thread: the worker that finishes last must wake that one.
            let (moved, got) = std::thread::spawn(move || {
                let got = bits(venv.step(&actions(n, s)).unwrap());
                (venv, got)
            })
            .join()
            .unwrap();
            venv = moved;
            assert!(got == expected, "step {s} differs");
        }
    }

    /// A stand-in for an environment that costs about as much as rendering a small image.
    struct Busy {
        inner: Counter,
        work: usize,
    }

    impl Env for Busy {
        fn name(&self) -> &str {
            "busy"
        }
        fn observation_space(&self) -> &ObsSpace {
            self.inner.observation_space()
        }
        fn action_space(&self) -> &ActionSpace {
            self.inner.action_space()
        }
        fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
            self.inner.reset(seed)
        }
        fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
            let mut x = 0u64;
            for k in 0..self.work as u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(k));
            }
            std::hint::black_box(x);
            self.inner.step(action)
        }
    }

    /// Throughput of 16 busy envs, inline vs 2 workers: `cargo test --release vector::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput_two_workers_vs_inline() {
        let work: usize = std::env::var("BUSY_WORK").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let sps = |workers: usize| {
            let mut venv = VecEnv::new(config(16, workers), |i| {
                Ok(Box::new(Busy { inner: Counter::new(200 + i, false), work }) as Box<dyn Env>)
            })
            .unwrap();
            venv.reset(Some(0)).unwrap();
            let a = actions(16, 0);
            for _ in 0..50 {
                venv.step(&a).unwrap();
            }
            let steps = 1000;
            let start = Instant::now();
            for _ in 0..steps {
                venv.step(&a).unwrap();
            }
            (steps * 16) as f64 / start.elapsed().as_secs_f64()
        };
        let (one, two) = (sps(0), sps(2));
        println!("inline {one:.0} env-steps/s, 2 workers {two:.0} env-steps/s, speed-up {:.2}x", two / one);
    }
}

/// `save_state` / `restore_state` of a vector of built-in environments.
mod vector_state {
    use m3ixup_envs::{make, BatchActions, EnvError, VecEnv, VecEnvConfig, VecStep};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn pendulums(workers: usize, num_envs: usize) -> VecEnv {
        let params: toml::Table =
            toml::from_str("max_episode_steps = 15\nsensor_dropout = { mode = \"per-step\", p = 0.3 }").unwrap();
        let config = VecEnvConfig { num_envs, workers, seed: 3, ..VecEnvConfig::default() };
        VecEnv::new(config, move |_| make("multimodal-pendulum", &params)).unwrap()
    }

    fn steps(envs: &mut VecEnv, actions: &mut StdRng, n: usize) -> Vec<VecStep> {
        (0..n)
            .map(|_| {
                let batch = BatchActions::sample(envs.action_space(), envs.num_envs(), actions);
                envs.step(&batch).unwrap().clone()
            })
            .collect()
    }

    #[test]
    fn a_threaded_vector_restored_into_a_new_one_continues_exactly() {
        let mut envs = pendulums(3, 6);
        let mut actions = StdRng::seed_from_u64(1);
        envs.reset(None).unwrap();
        let before = steps(&mut envs, &mut actions, 10); // mid-episode, some dropped sensors
        let state = envs.save_state().unwrap().expect("built-in environments save their state");
        assert_eq!(state.obs, before[9].obs, "the saved observations are the ones to act on next");
        let mut replay = actions.clone();
        let after = steps(&mut envs, &mut actions, 20); // across the episode ends (15 steps)

        // Inline, another worker count: the same future.
        let mut restored = pendulums(0, 6);
        let first_obs = restored.restore_state(&state).unwrap().clone();
        assert_eq!(first_obs, state.obs);
        assert_eq!(steps(&mut restored, &mut replay, 20), after);
    }

    #[test]
    fn a_state_of_another_vector_size_is_refused_and_changes_nothing() {
        let mut four = pendulums(0, 4);
        four.reset(None).unwrap();
        let state = four.save_state().unwrap().unwrap();
        let mut six = pendulums(0, 6);
        let err = six.restore_state(&state).unwrap_err();
        assert!(matches!(&err, EnvError::State { reason, .. } if reason.contains("holds 4 environments")), "{err}");
        assert!(six.reset(None).is_ok(), "a refused state does not poison the vector");
    }

    #[test]
    fn saving_before_the_first_reset_is_an_error() {
        let mut envs = pendulums(0, 2);
        assert!(matches!(envs.save_state(), Err(EnvError::NeedsReset { .. })));
    }
}
