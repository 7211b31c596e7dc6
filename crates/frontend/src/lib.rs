//! kiln-frontend turns a Dockerfile into a build graph and an image config skeleton.
//!
//! The layers, each its own module:
//! - [`syntax`]: text → typed, spanned instructions (BuildKit's parser semantics);
//! - [`shell`]: word expansion (`$VAR`, `${VAR:-default}`, quotes);
//! - [`convert`]: instructions → [`kiln_graph::Definition`] + [`kiln_image::ImageConfig`],
//!   with BuildKit's `dockerfile2llb` semantics (stages, ARG scoping, history);
//! - [`lint`]: BuildKit's Dockerfile checks, reported as [`Warning`]s.
//!
//! The frontend is pure: it reads nothing but the Dockerfile text it is given.

pub mod convert;
pub mod csv;
pub mod error;
pub mod lint;
mod suggest;
pub mod syntax;

pub use convert::{
    build_plan, check, BuildOptions, BuildPlan, BuiltStage, CheckReport, ImageResolver, NamedContext, ResolvedImage,
};
pub use error::{ErrorKind, FrontendError};
pub use lint::Warning;

pub mod shell;
