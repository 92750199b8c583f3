use std::collections::VecDeque;

use crate::state::{save_wrapper, EnvState};
use crate::{Action, ActionSpace, Env, EnvError, Info, ModalityData, Obs, ObsSpace, Step};

/// Stacks the last `k` frames of every modality along its first axis (image channels, or the
/// vector), oldest first. At reset the first frame is repeated `k` times.
///
/// A modality that is missing in a frame (sensor dropout applied underneath) stays zero in that
/// slot; the stacked modality is marked present when its newest frame is present.
pub struct FrameStack<E> {
    inner: E,
    k: usize,
    space: ObsSpace,
    /// Per modality, the last `k` frames, oldest at the front.
    frames: Vec<VecDeque<ModalityData>>,
}

impl<E: Env> FrameStack<E> {
    pub fn new(inner: E, k: usize) -> Result<Self, EnvError> {
        if k == 0 {
            return Err(EnvError::InvalidParam {
                env: inner.name().to_string(),
                param: "frame_stack".into(),
                reason: "must be at least 1".into(),
            });
        }
        let space = inner.observation_space().map_specs(|_, spec| spec.stacked(k));
        let frames = (0..space.len()).map(|_| VecDeque::with_capacity(k + 1)).collect();
        Ok(Self { inner, k, space, frames })
    }

    fn push(&mut self, obs: Obs, repeat: bool) -> Obs {
        let Obs { data, present } = obs;
        for (frames, frame) in self.frames.iter_mut().zip(data) {
            if repeat {
                frames.clear();
                for _ in 1..self.k {
                    frames.push_back(frame.clone());
                }
            } else if frames.len() == self.k {
                frames.pop_front();
            }
            frames.push_back(frame);
        }
        let data = self.frames.iter().map(concat).collect();
        Obs { data, present }
    }
}

fn concat(frames: &VecDeque<ModalityData>) -> ModalityData {
    let numel = frames[0].len() * frames.len();
    match &frames[0] {
        ModalityData::U8(_) => {
            let mut out = Vec::with_capacity(numel);
            for f in frames {
                out.extend_from_slice(f.as_u8().expect("a modality keeps its dtype"));
            }
            ModalityData::U8(out)
        }
        ModalityData::F32(_) => {
            let mut out = Vec::with_capacity(numel);
            for f in frames {
                out.extend_from_slice(f.as_f32().expect("a modality keeps its dtype"));
            }
            ModalityData::F32(out)
        }
    }
}

impl<E: Env> Env for FrameStack<E> {
    fn save_state(&self) -> Option<EnvState> {
        save_wrapper("FrameStack", &self.frames, &self.inner)
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        self.inner.restore_state(state.inner("FrameStack")?)?;
        let frames: Vec<VecDeque<ModalityData>> = state.fields("FrameStack")?;
        // k frames of each modality (none before the first reset), each of the inner space's size.
        let inner = self.inner.observation_space();
        let fits = frames.len() == inner.len()
            && frames.iter().zip(inner.iter()).all(|(stack, (_, spec))| {
                (stack.len() == self.k || stack.is_empty())
                    && stack.iter().all(|f| f.dtype() == spec.dtype && f.len() == spec.numel())
            });
        if !fits {
            return Err(EnvError::State {
                env: self.name().to_string(),
                reason: format!("the saved frame stack does not fit {} modalities of {} frames", inner.len(), self.k),
            });
        }
        self.frames = frames;
        Ok(())
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn observation_space(&self) -> &ObsSpace {
        &self.space
    }
    fn action_space(&self) -> &ActionSpace {
        self.inner.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        let (obs, info) = self.inner.reset(seed)?;
        Ok((self.push(obs, true), info))
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let step = self.inner.step(action)?;
        let obs = self.push(step.obs, false);
        Ok(Step { obs, ..step })
    }
}
