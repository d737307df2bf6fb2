//! kd-data: real data sets into the pipeline's dataset artifact, and the
//! batch assembly every trainer uses.
//!
//! Importers read IDX (MNIST, Fashion-MNIST, KMNIST; raw or gzipped), CIFAR-10
//! and CIFAR-100 binary batches, and image folders. They produce [`Imported`]
//! splits that [`store::write_dataset`] stores as `dataset.zarr` (uint8 images
//! `[N,C,H,W]`, uint16 labels, class names, per-channel mean/std), with
//! each sample's [`origin`] (source path or index) to trace a row back.
//! [`augment`] applies views (see `kd_core::view`) to batches on rayon.
//! A dataset larger than the data cache is read by chunk ([`pixels`]).

pub mod augment;
pub mod cifar;
pub mod error;
pub mod folder;
pub mod idx;
pub mod origin;
pub mod pixels;
pub mod split;
pub mod stage;
pub mod store;

pub use error::{DataError, Result};
pub use origin::{OriginKind, origin, origins};
pub use pixels::{Gathered, Pixels};
pub use split::{Imported, Split, Traced};
pub use store::{Dataset, write_dataset, write_traced};
