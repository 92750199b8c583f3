//! Representation learning, independent of any RL algorithm: the M3ixup encoders ([`encoder`],
//! with the conv trunks' convolutions in [`conv`]) and the observation batches they read
//! ([`storage`]), the GMC and M3ixup losses ([`losses`]; docs/M3IXUP.md), the config sections
//! of the environment and the auxiliary loss that pretraining and every algorithm share
//! ([`sections`]), and offline pretraining of the encoders on random-policy data ([`pretrain`],
//! the paper's protocol).

pub mod conv;
pub mod encoder;
pub mod losses;
pub mod pretrain;
pub mod sections;
pub mod storage;
