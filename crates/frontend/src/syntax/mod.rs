//! The Dockerfile syntax layer: text → spanned, typed instructions.
//!
//! Parsing happens in three steps, each its own module:
//! - [`scan`]: lines → logical instructions (directives, comments, continuations,
//!   heredoc bodies), with their 1-based line range;
//! - [`node`]: one logical line → instruction word, `--flags` and arguments, exactly
//!   as BuildKit's line parsers split them ([`dump`] prints that layer as BuildKit's
//!   `Node.Dump` does, which the conformance test compares with BuildKit's corpus);
//! - [`instruction`]: nodes → [`Instruction`]s with typed arguments and flags.
//!
//! kiln does its own scanning rather than going through `parse-dockerfile` (the
//! library the design first chose): that crate rejects valid Dockerfiles BuildKit
//! accepts — a heredoc that is not the first word (`RUN cat <<EOF > f`), several
//! heredocs in one `RUN`, a bare `HEALTHCHECK` — and accepts some BuildKit rejects
//! (`ENV name` without a value), so its result could not be trusted as the AST.

pub mod dump;
pub mod flags;
pub mod instruction;
pub mod node;
pub mod scan;

pub use flags::{AddFlags, CopyFlags, FromFlags, HealthcheckFlags, RunFlags};
pub use instruction::{
    ArgDecl, Command, CopyInstr, FromInstr, HealthTest, Instruction, InstructionKind, KeyValue, RunInstr,
};
pub use node::{Heredoc, Node};
pub use scan::Directives;

use crate::error::{ErrorKind, SyntaxError};

/// Dockerfile is a parsed Dockerfile: directives and typed instructions in order.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub directives: Directives,
    pub instructions: Vec<Instruction>,
    /// Lines (1-based) that continue an instruction but are empty (deprecated).
    pub empty_continuations: Vec<u32>,
}

/// Parses the parser layer only (BuildKit `parser.Parse`): every instruction word is
/// accepted, arguments are split but not typed.
pub fn parse_nodes(text: &str) -> Result<(Directives, Vec<Node>), SyntaxError> {
    let scanned = scan::scan(text)?;
    Ok((scanned.directives, scanned.nodes))
}

/// MAX_DOCKERFILE_SIZE is the largest Dockerfile kiln reads (16 MiB, the gRPC message
/// limit that bounds a Dockerfile and its LLB in BuildKit); parsing and lowering keep
/// memory within a small multiple of it.
pub const MAX_DOCKERFILE_SIZE: usize = 16 << 20;

/// Parses a Dockerfile into typed instructions.
pub fn parse(text: &str) -> Result<Dockerfile, SyntaxError> {
    if text.is_empty() {
        return Err(SyntaxError::whole_file(ErrorKind::EmptyDockerfile));
    }
    if text.len() > MAX_DOCKERFILE_SIZE {
        return Err(SyntaxError::whole_file(ErrorKind::DockerfileTooLarge {
            limit: MAX_DOCKERFILE_SIZE,
        }));
    }
    let scanned = scan::scan(text)?;
    let mut instructions = Vec::with_capacity(scanned.nodes.len());
    for node in &scanned.nodes {
        let instr =
            instruction::from_node(node).map_err(|kind| SyntaxError::at(node.start_line, node.end_line, kind))?;
        instructions.push(instr);
    }
    Ok(Dockerfile {
        directives: scanned.directives,
        instructions,
        empty_continuations: scanned.empty_continuations,
    })
}
