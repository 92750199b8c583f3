//! Observation storage shared by pretraining data sets and rollouts: one contiguous buffer per
//! modality, sample-major, pixels kept as `u8`, plus a presence flag per sample and modality.
//! Batches for the learner are gathered row by row into one tensor per modality.

use burn::prelude::*;
use burn::tensor::DType as TensorDType;
use m3ixup_envs::vector::BatchObs;
use m3ixup_envs::{DType, ModalityData, ObsSpace};

use crate::representation::encoder::{ModalityTensor, MultimodalInput, Presence};

/// Observations of one space: sample `i` of modality `m` occupies `[i * numel_m, (i + 1) *
/// numel_m)` of `buffers[m]`; `present[i * modalities + m]` says whether it was observed.
#[derive(Clone, Debug)]
pub struct ObsBuffer {
    space: ObsSpace,
    numel: Vec<usize>,
    len: usize,
    buffers: Vec<ModalityData>,
    present: Vec<bool>,
}

impl ObsBuffer {
    /// An empty buffer with room for `capacity` samples.
    pub fn with_capacity(space: &ObsSpace, capacity: usize) -> Self {
        let buffers = space
            .iter()
            .map(|(_, s)| match s.dtype {
                DType::U8 => ModalityData::U8(Vec::with_capacity(capacity * s.numel())),
                DType::F32 => ModalityData::F32(Vec::with_capacity(capacity * s.numel())),
            })
            .collect();
        Self {
            space: space.clone(),
            numel: space.iter().map(|(_, s)| s.numel()).collect(),
            len: 0,
            buffers,
            present: Vec::with_capacity(capacity * space.len()),
        }
    }

    pub fn space(&self) -> &ObsSpace {
        &self.space
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every sample and keeps the allocation.
    pub fn clear(&mut self) {
        self.len = 0;
        self.present.clear();
        for b in &mut self.buffers {
            match b {
                ModalityData::U8(v) => v.clear(),
                ModalityData::F32(v) => v.clear(),
            }
        }
    }

    /// The contiguous buffer of modality `m` (`len * numel_m` values).
    pub fn modality(&self, m: usize) -> &ModalityData {
        &self.buffers[m]
    }

    /// Appends sub-environment `i` of a vector environment's batch.
    pub fn push_env(&mut self, batch: &BatchObs, i: usize) {
        self.push_rows(batch, i..i + 1);
    }

    /// Appends every sub-environment of a batch, in index order.
    pub fn push_batch(&mut self, batch: &BatchObs) {
        self.push_rows(batch, 0..batch.num_envs());
    }

    fn push_rows(&mut self, batch: &BatchObs, rows: std::ops::Range<usize>) {
        for (m, buffer) in self.buffers.iter_mut().enumerate() {
            let span = rows.start * self.numel[m]..rows.end * self.numel[m];
            match (buffer, &batch.buffers[m]) {
                (ModalityData::U8(dst), ModalityData::U8(src)) => dst.extend_from_slice(&src[span]),
                (ModalityData::F32(dst), ModalityData::F32(src)) => dst.extend_from_slice(&src[span]),
                _ => panic!("modality `{}`: the batch's dtype differs from the space's", self.space.name(m)),
            }
        }
        let k = self.space.len();
        self.present.extend_from_slice(&batch.present[rows.start * k..rows.end * k]);
        self.len += rows.len();
    }

    /// Whether every modality of sample `i` is present.
    pub fn complete(&self, i: usize) -> bool {
        let k = self.space.len();
        self.present[i * k..(i + 1) * k].iter().all(|&p| p)
    }

    /// The presence masks of the samples at `indices`.
    pub fn presence(&self, indices: &[usize]) -> Presence {
        let k = self.space.len();
        let rows: Vec<Vec<bool>> = indices.iter().map(|&i| self.present[i * k..(i + 1) * k].to_vec()).collect();
        presence_of(&rows, indices.len(), k)
    }

    /// The samples at `indices` as one tensor per modality, `[b, ...shape]`, raw values as f32,
    /// with their presence masks. `u8` modalities travel as bytes and are converted to f32 on
    /// the device when the backend stores `u8`.
    pub fn batch<B: Backend>(&self, indices: &[usize], device: &B::Device) -> (MultimodalInput<B>, Presence) {
        let modalities = self
            .buffers
            .iter()
            .enumerate()
            .map(|(m, buffer)| {
                let data = match buffer {
                    ModalityData::U8(v) => ModalityData::U8(gather_rows(v, self.numel[m], indices)),
                    ModalityData::F32(v) => ModalityData::F32(gather_rows(v, self.numel[m], indices)),
                };
                modality_tensor(&self.space, m, data, indices.len(), device)
            })
            .collect();
        (MultimodalInput::new(modalities), self.presence(indices))
    }
}

/// An [`ObsBuffer`] uploaded to a device once, so that minibatches are row selections there
/// rather than host gathers and uploads: `u8` modalities stay `u8` on the device (when the
/// backend stores `u8`) and become f32 only for the selected rows.
#[derive(Clone, Debug)]
pub struct DeviceObs<B: Backend> {
    space: ObsSpace,
    modalities: Vec<DeviceModality<B>>,
}

#[derive(Clone, Debug)]
enum DeviceModality<B: Backend> {
    /// Raw bytes, `[len, numel]`.
    Bytes(Tensor<B, 2, Int>),
    /// Values as f32, `[len, numel]`.
    Floats(Tensor<B, 2>),
}

impl<B: Backend> DeviceObs<B> {
    /// Every sample of `buffer`, one upload per modality.
    pub fn upload(buffer: &ObsBuffer, device: &B::Device) -> Self {
        let n = buffer.len();
        let modalities = buffer
            .buffers
            .iter()
            .enumerate()
            .map(|(m, data)| {
                let shape = [n, buffer.numel[m]];
                match data {
                    ModalityData::U8(v) if B::supports_dtype(device, TensorDType::U8) => DeviceModality::Bytes(
                        Tensor::from_data(TensorData::new(v.clone(), shape), (device, TensorDType::U8)),
                    ),
                    ModalityData::U8(v) => DeviceModality::Floats(Tensor::from_data(
                        TensorData::new(v.iter().map(|&b| b as f32).collect::<Vec<_>>(), shape),
                        device,
                    )),
                    ModalityData::F32(v) => {
                        DeviceModality::Floats(Tensor::from_data(TensorData::new(v.clone(), shape), device))
                    }
                }
            })
            .collect();
        Self { space: buffer.space.clone(), modalities }
    }

    /// The rows `rows` (`[b]`, on this device) as the learner's input, raw values as f32 in the
    /// space's shapes (the same tensors [`ObsBuffer::batch`] builds on the host).
    pub fn select(&self, rows: &Tensor<B, 1, Int>) -> MultimodalInput<B> {
        let b = rows.dims()[0];
        let modalities = self
            .modalities
            .iter()
            .enumerate()
            .map(|(m, data)| {
                let flat = match data {
                    DeviceModality::Bytes(t) => t.clone().select(0, rows.clone()).float(),
                    DeviceModality::Floats(t) => t.clone().select(0, rows.clone()),
                };
                let spec = self.space.spec(m);
                if spec.is_image() {
                    let s = &spec.shape;
                    ModalityTensor::Image(flat.reshape([b, s[0], s[1], s[2]]))
                } else {
                    ModalityTensor::Vector(flat)
                }
            })
            .collect();
        MultimodalInput::new(modalities)
    }
}

/// A whole vector-environment batch as the learner's input (one copy per modality, no per-element
/// work), for batched inference during rollouts.
pub fn batch_input<B: Backend>(
    space: &ObsSpace,
    batch: &BatchObs,
    device: &B::Device,
) -> (MultimodalInput<B>, Presence) {
    let n = batch.num_envs();
    let modalities = (0..space.len()).map(|m| modality_tensor(space, m, batch.buffers[m].clone(), n, device)).collect();
    let k = space.len();
    let rows: Vec<Vec<bool>> = (0..n).map(|i| batch.env_present(i).to_vec()).collect();
    (MultimodalInput::new(modalities), presence_of(&rows, n, k))
}

fn presence_of(rows: &[Vec<bool>], n: usize, k: usize) -> Presence {
    if rows.is_empty() {
        Presence::all(n, k)
    } else {
        Presence::from_rows(rows)
    }
}

/// `b` rows of modality `m` as a tensor of the space's shape.
fn modality_tensor<B: Backend>(
    space: &ObsSpace,
    m: usize,
    data: ModalityData,
    b: usize,
    device: &B::Device,
) -> ModalityTensor<B> {
    let spec = space.spec(m);
    // Images keep their [C, H, W]; vector modalities are flattened to [b, numel].
    let shape: Vec<usize> = if spec.is_image() {
        std::iter::once(b).chain(spec.shape.iter().copied()).collect()
    } else {
        vec![b, spec.numel()]
    };
    let data = match data {
        ModalityData::U8(v) => TensorData::new(v, shape),
        ModalityData::F32(v) => TensorData::new(v, shape),
    };
    if spec.is_image() {
        ModalityTensor::Image(float_tensor::<B, 4>(data, device))
    } else {
        ModalityTensor::Vector(float_tensor::<B, 2>(data, device))
    }
}

fn gather_rows<T: Copy>(buffer: &[T], numel: usize, indices: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(indices.len() * numel);
    for &i in indices {
        out.extend_from_slice(&buffer[i * numel..(i + 1) * numel]);
    }
    out
}

/// A float tensor from `data`; `u8` data goes to the device as bytes when the backend stores
/// `u8`, and is converted there.
pub fn float_tensor<B: Backend, const D: usize>(data: TensorData, device: &B::Device) -> Tensor<B, D> {
    if data.dtype == TensorDType::U8 && B::supports_dtype(device, TensorDType::U8) {
        Tensor::<B, D, Int>::from_data(data, (device, TensorDType::U8)).float()
    } else {
        Tensor::from_data(data, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use m3ixup_envs::ModalitySpec;

    #[test]
    fn batches_are_gathered_from_the_contiguous_buffers_with_pixels_as_raw_values_and_masks() {
        let space = ObsSpace::new([
            ("pixels", ModalitySpec::uniform(&[1, 2, 2], DType::U8, 0.0, 255.0)),
            ("sound", ModalitySpec::uniform(&[2], DType::F32, -1.0, 1.0)),
        ])
        .unwrap();
        // Three environments: pixels i*10 + (0..4) (+200 for the last), sound (i, -i); the
        // first has lost its sound.
        let pixels: Vec<u8> = (0..3u8).flat_map(|i| (0..4u8).map(move |j| i * 10 + j + 200 * (i == 2) as u8)).collect();
        let sound: Vec<f32> = (0..3).flat_map(|i| [i as f32, -(i as f32)]).collect();
        let batch = BatchObs {
            buffers: vec![ModalityData::U8(pixels), ModalityData::F32(sound)],
            present: vec![true, false, true, true, true, true],
        };
        let mut store = ObsBuffer::with_capacity(&space, 4);
        store.push_batch(&batch);
        assert_eq!(store.len(), 3);
        assert!(!store.complete(0) && store.complete(2));
        let (x, presence) = store.batch::<Flex>(&[2, 0], &Default::default());
        let ModalityTensor::Image(p) = &x.modalities[0] else { panic!("pixels are an image") };
        assert_eq!(p.dims(), [2, 1, 2, 2]);
        let p: Vec<f32> = p.clone().into_data().to_vec().unwrap();
        assert_eq!(p, vec![220.0, 221.0, 222.0, 223.0, 0.0, 1.0, 2.0, 3.0]);
        let ModalityTensor::Vector(v) = &x.modalities[1] else { panic!("sound is a vector") };
        assert_eq!(v.clone().into_data().to_vec::<f32>().unwrap(), vec![2.0, -2.0, 0.0, -0.0]);
        assert_eq!(presence, Presence::from_rows(&[vec![true, true], vec![true, false]]));

        // Uploaded once, the same rows selected on the device are the same tensors.
        let on_device = DeviceObs::<Flex>::upload(&store, &Default::default());
        let rows = Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &Default::default());
        let selected = on_device.select(&rows);
        for (a, b) in selected.modalities.iter().zip(&x.modalities) {
            let values = |t: &ModalityTensor<Flex>| match t {
                ModalityTensor::Image(t) => (t.dims().to_vec(), t.clone().into_data().to_vec::<f32>().unwrap()),
                ModalityTensor::Vector(t) => (t.dims().to_vec(), t.clone().into_data().to_vec::<f32>().unwrap()),
            };
            assert_eq!(values(a), values(b));
        }
        assert_eq!(store.presence(&[2, 0]), presence);

        // The whole batch, straight from the vector environment's buffers.
        let (whole, presence) = batch_input::<Flex>(&space, &batch, &Default::default());
        assert_eq!(whole.batch_size(), 3);
        assert!(!presence.complete(0) && presence.complete(1));
        store.clear();
        assert!(store.is_empty());
    }
}
