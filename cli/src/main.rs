//! `kiln`: a daemonless Dockerfile image builder.

#![allow(
    clippy::disallowed_methods,
    reason = "every file-system call of the CLI wraps its error with the path (`with_context`)"
)]

/// `println!` for kiln's output: a reader that went away (`kiln images | head -1`) ends
/// kiln quietly, as it ends `ls`, where `println!` would panic on EPIPE.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*))
    };
}

mod build;
mod check;
mod images;
mod maintenance;
mod progress;
mod push;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kiln builds OCI images from Dockerfiles without a daemon.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, propagate_version = true)]
struct Cli {
    /// Where kiln keeps images and cache (default: $KILN_ROOT, /var/lib/kiln as root,
    /// else $XDG_DATA_HOME/kiln or ~/.local/share/kiln).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<build::BuildArgs>),
    /// Pull an image from a registry into the local store.
    #[command(
        after_help = "Environment:\n  KILN_REGISTRY_TIMEOUT  seconds a registry may stay silent (connect, answer, between body reads; default 30)"
    )]
    Pull(images::PullArgs),
    /// Push an image from the local store to a registry.
    Push(push::PushArgs),
    /// Store credentials for a registry in the docker config file.
    Login(images::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(images::LogoutArgs),
    /// List images in the local store.
    Images(images::ImagesArgs),
    /// Add a name to an image.
    Tag(images::TagArgs),
    /// Remove images (tags) from the local store.
    Rmi(images::RmiArgs),
    /// Show an image's manifest and config as JSON.
    Inspect(images::InspectArgs),
    /// Write images to an archive (docker-archive or oci-archive).
    Save(images::SaveArgs),
    /// Remove build cache and what only it needed (blobs, snapshots).
    Prune(maintenance::PruneArgs),
    /// Show what the root holds: images, build cache, blobs, snapshots.
    Du(maintenance::DuArgs),
    /// Verify every blob, image, cache record and snapshot; `--repair` fixes what it can.
    Fsck(maintenance::FsckArgs),
}

fn main() -> ExitCode {
    // The sandbox helper is this binary re-executed; it must start before anything else.
    kiln_executor::run_helper_if_requested();
    // Nothing kiln was started with beyond stdin, stdout and stderr (a host file a
    // shell left open on fd 7) may reach a re-executed kiln, a runtime or a RUN step.
    if let Err(e) = kiln_executor::cloexec_inherited_fds() {
        eprintln!("ERROR: cannot mark inherited file descriptors close-on-exec: {e}");
        return ExitCode::FAILURE;
    }
    // A non-root user's kiln runs inside a user namespace where it is root, for the
    // commands that unpack or remove snapshots (files of other ids).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if kiln_build::flags::needs_userns(&args) {
        kiln_executor::userns::reexec_rootless(kiln_build::flags::subcommand(&args) == Some("build"));
    }
    let cli = Cli::parse();
    let root = cli.root.clone().unwrap_or_else(kiln_cache::KilnRoot::default_path);
    let result = match cli.command {
        Command::Build(a) => build::run(&root, *a),
        Command::Pull(a) => images::pull(&root, a),
        Command::Push(a) => push::push(&root, a),
        Command::Login(a) => images::login(a),
        Command::Logout(a) => images::logout(a),
        Command::Images(a) => images::images(&root, a),
        Command::Tag(a) => images::tag(&root, a),
        Command::Rmi(a) => images::rmi(&root, a),
        Command::Inspect(a) => images::inspect(&root, a),
        Command::Save(a) => images::save(&root, a),
        Command::Prune(a) => maintenance::prune(&root, a),
        Command::Du(a) => maintenance::du(&root, a),
        Command::Fsck(a) => maintenance::fsck(&root, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `build --check` found warnings: shown already, only the exit code is left.
        Err(e) if e.is::<check::Violations>() => ExitCode::FAILURE,
        Err(e) => {
            render_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error and its causes, BuildKit style, plus any Dockerfile excerpt.
fn render_error(e: &anyhow::Error) {
    if let Some(snippet) = e.downcast_ref::<kiln_build::BuildError>().and_then(|b| b.snippet()) {
        eprint!("{}", snippet.render());
    }
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    eprintln!("ERROR: {msg}");
}

/// Writes one line of output to stdout; a closed stdout (EPIPE) ends kiln with status 0
/// and nothing on stderr; another write error ends it with status 1 and the error.
pub(crate) fn stdout_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("ERROR: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}
