//! Tests of the M3ixup encoders and losses (one integration-test binary).

mod common;
mod conv;
mod encoder;
mod losses;
mod reference;
