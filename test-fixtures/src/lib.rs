//! Test-only helpers shared by the workspace's integration tests.
//!
//! * [`cmd`]: run a command, failing the test with its output.
//! * [`skip`]: the rule for tests that need root or a tool: skip with a printed reason
//!   locally, fail under CI (`CI=true`), where nothing may skip.
//! * [`oci`]: write real OCI image layouts (uncompressed tar layers) from declared trees.
//! * [`images`]: small but bootable-shaped test images (v1, v2 sharing a base layer).

pub mod cmd;
pub mod images;
pub mod oci;
pub mod skip;
