//! Progress renderers: BuildKit's plain format, rawjson, and quiet.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use kiln_solver::{Event, Progress};

/// Mode is the `--progress` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Auto,
    Plain,
    Tty,
    Rawjson,
    Quiet,
}

/// Renderer writes events to stderr in the chosen format.
pub struct Renderer {
    mode: Mode,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Renderer {
    pub fn new(mode: Mode) -> Self {
        // The live tty view arrives with the parallel solver; until then tty and auto
        // print the plain format, which is what BuildKit prints without a terminal.
        let mode = match mode {
            Mode::Auto | Mode::Tty => Mode::Plain,
            m => m,
        };
        Renderer {
            mode,
            out: Mutex::new(Box::new(std::io::stderr())),
        }
    }

    fn secs(d: Duration) -> String {
        format!("{:.1}s", d.as_secs_f64())
    }

    /// A step the CLI runs itself (loading the Dockerfile, exporting).
    pub fn internal(&self, vertex: u32, name: &str, lines: &[String], elapsed: Duration) {
        self.event(Event::Started {
            vertex,
            name: name.to_string(),
        });
        for l in lines {
            self.event(Event::Status {
                vertex,
                line: l.clone(),
            });
        }
        self.event(Event::Done { vertex, elapsed });
    }
}

impl Progress for Renderer {
    fn event(&self, e: Event) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = match self.mode {
            Mode::Quiet => Ok(()),
            Mode::Rawjson => {
                let v = match &e {
                    Event::Started { vertex, name } => {
                        serde_json::json!({"vertex": vertex, "event": "started", "name": name})
                    }
                    Event::Log { vertex, elapsed, line } => {
                        serde_json::json!({"vertex": vertex, "event": "log", "elapsed": elapsed.as_secs_f64(), "line": line})
                    }
                    Event::Status { vertex, line } => {
                        serde_json::json!({"vertex": vertex, "event": "status", "line": line})
                    }
                    Event::Cached { vertex, name } => {
                        serde_json::json!({"vertex": vertex, "event": "cached", "name": name})
                    }
                    Event::Done { vertex, elapsed } => {
                        serde_json::json!({"vertex": vertex, "event": "done", "elapsed": elapsed.as_secs_f64()})
                    }
                    Event::Error { vertex, message } => {
                        serde_json::json!({"vertex": vertex, "event": "error", "message": message})
                    }
                };
                writeln!(out, "{v}")
            }
            _ => match &e {
                Event::Started { vertex, name } => writeln!(out, "#{vertex} {name}"),
                Event::Log { vertex, elapsed, line } => writeln!(out, "#{vertex} {:.3} {line}", elapsed.as_secs_f64()),
                Event::Status { vertex, line } => writeln!(out, "#{vertex} {line}"),
                Event::Cached { vertex, name } => writeln!(out, "#{vertex} {name}\n#{vertex} CACHED\n"),
                Event::Done { vertex, elapsed } => writeln!(out, "#{vertex} DONE {}\n", Self::secs(*elapsed)),
                Event::Error { vertex, message } => writeln!(out, "#{vertex} ERROR: {message}\n"),
            },
        };
    }
}
