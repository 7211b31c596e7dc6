//! Progress renderers: BuildKit's live tty view, its plain format, rawjson, and quiet;
//! they own stderr while a build runs: its steps and its warnings are events.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_build::{BuildEvent, BuildProgress};
use kiln_solver::Event;

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
    tty: Option<Tty>,
    start: Instant,
}

/// How many log lines of a running step the tty view shows.
const TTY_LOG_LINES: usize = 6;
/// How many log lines of a failed step are kept to print at the end.
const KEPT_LOG_LINES: usize = 200;

struct Tty {
    view: Arc<Mutex<View>>,
    /// Warnings, printed below the final screen (printed at once they would be drawn over).
    warnings: Mutex<Vec<String>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct Vertex {
    num: u32,
    name: String,
    started: Option<Instant>,
    elapsed: Option<Duration>,
    cached: bool,
    error: Option<String>,
    canceled: bool,
    logs: VecDeque<String>,
}

struct View {
    start: Instant,
    vertices: Vec<Vertex>,
    drawn: usize,
}

impl View {
    fn vertex(&mut self, num: u32) -> &mut Vertex {
        if let Some(i) = self.vertices.iter().position(|v| v.num == num) {
            return &mut self.vertices[i];
        }
        self.vertices.push(Vertex {
            num,
            ..Default::default()
        });
        self.vertices.sort_by_key(|v| v.num);
        let i = self.vertices.iter().position(|v| v.num == num).expect("just added");
        &mut self.vertices[i]
    }

    fn apply(&mut self, e: Event) {
        match e {
            Event::Started { vertex, name } => {
                let v = self.vertex(vertex);
                v.name = name;
                v.started = Some(Instant::now());
            }
            Event::Log { vertex, line, .. } | Event::Status { vertex, line } => {
                let v = self.vertex(vertex);
                v.logs.push_back(line);
                if v.logs.len() > KEPT_LOG_LINES {
                    v.logs.pop_front();
                }
            }
            Event::Cached { vertex, name } => {
                let v = self.vertex(vertex);
                v.name = name;
                v.cached = true;
                v.elapsed = Some(Duration::ZERO);
            }
            Event::Done { vertex, elapsed } => self.vertex(vertex).elapsed = Some(elapsed),
            Event::Error { vertex, message } => {
                let v = self.vertex(vertex);
                v.error = Some(message);
                v.elapsed = Some(v.started.map(|s| s.elapsed()).unwrap_or_default());
            }
            Event::Canceled { vertex } => {
                let v = self.vertex(vertex);
                v.canceled = true;
                v.elapsed = Some(v.started.map(|s| s.elapsed()).unwrap_or_default());
            }
        }
    }

    /// BuildKit's screen: a header, one line per step, the last lines of running steps.
    fn frame(&self, width: usize, finished: bool) -> Vec<String> {
        let done = self.vertices.iter().filter(|v| v.elapsed.is_some()).count();
        let mut out = vec![format!(
            "[+] Building {:.1}s ({done}/{}){}",
            self.start.elapsed().as_secs_f64(),
            self.vertices.len(),
            if finished { " FINISHED" } else { "" }
        )];
        for v in &self.vertices {
            let t = v.elapsed.or_else(|| v.started.map(|s| s.elapsed())).unwrap_or_default();
            let mark = if v.cached {
                "CACHED "
            } else if v.error.is_some() {
                "ERROR "
            } else if v.canceled {
                "CANCELED "
            } else {
                ""
            };
            let time = format!("{:.1}s", t.as_secs_f64());
            let left = format!(" => {mark}{}", v.name);
            out.push(fit(&left, &time, width));
            if v.elapsed.is_none() && v.started.is_some() {
                let n = v.logs.len().saturating_sub(TTY_LOG_LINES);
                for l in v.logs.iter().skip(n) {
                    out.push(truncate(&format!(" => => # {l}"), width));
                }
            }
        }
        out
    }
}

/// `left` and `right` on one line of `width` columns, `left` cut to fit.
fn fit(left: &str, right: &str, width: usize) -> String {
    let room = width.saturating_sub(right.chars().count() + 1).max(10);
    let l = truncate(left, room);
    let pad = width.saturating_sub(l.chars().count() + right.chars().count()).max(1);
    format!("{l}{}{right}", " ".repeat(pad))
}

fn truncate(s: &str, width: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(width).collect()
}

fn term_width() -> usize {
    match rustix::termios::tcgetwinsize(std::io::stderr()) {
        Ok(ws) if ws.ws_col > 20 => ws.ws_col as usize,
        _ => 80,
    }
}

impl Renderer {
    pub fn new(mode: Mode) -> Self {
        let mode = match mode {
            Mode::Auto if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() => Mode::Tty,
            Mode::Auto => Mode::Plain,
            m => m,
        };
        let start = Instant::now();
        let tty = (mode == Mode::Tty).then(|| {
            let view = Arc::new(Mutex::new(View {
                start,
                vertices: Vec::new(),
                drawn: 0,
            }));
            let stop = Arc::new(AtomicBool::new(false));
            let (v, s) = (view.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    draw(&v, false);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            Tty {
                view,
                warnings: Mutex::new(Vec::new()),
                stop,
                thread: Mutex::new(Some(thread)),
            }
        });
        Renderer {
            mode,
            out: Mutex::new(Box::new(std::io::stderr())),
            tty,
            start,
        }
    }

    fn secs(d: Duration) -> String {
        format!("{:.1}s", d.as_secs_f64())
    }

    /// Draws the final tty screen and, for failed steps, their logs as BuildKit does.
    pub fn finish(&self) {
        let Some(t) = &self.tty else { return };
        t.stop.store(true, Ordering::SeqCst);
        if let Some(h) = t.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        draw(&t.view, true);
        let view = t.view.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        for v in view.vertices.iter().filter(|v| v.error.is_some()) {
            let _ = writeln!(err, "------\n > {}:", v.name);
            for l in &v.logs {
                let _ = writeln!(err, "{l}");
            }
            let _ = writeln!(err, "------");
        }
        for w in t.warnings.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = writeln!(err, "{w}");
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Redraws the tty screen in place.
fn draw(view: &Mutex<View>, finished: bool) {
    let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
    let lines = v.frame(term_width(), finished);
    let mut s = String::new();
    if v.drawn > 0 {
        s.push_str(&format!("\x1b[{}A", v.drawn));
    }
    s.push_str("\x1b[J");
    for l in &lines {
        s.push_str(l);
        s.push('\n');
    }
    v.drawn = lines.len();
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(s.as_bytes());
    let _ = err.flush();
}

impl BuildProgress for Renderer {
    fn event(&self, e: BuildEvent) {
        match e {
            BuildEvent::Step(e) => self.step(e),
            BuildEvent::Warning(w) => match &self.tty {
                Some(t) => t
                    .warnings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("WARN: {w}")),
                // In every other mode (quiet too) at once, as its own line.
                None => {
                    let _ = writeln!(self.out.lock().unwrap_or_else(|p| p.into_inner()), "WARN: {w}");
                }
            },
            BuildEvent::Note(n) => match &self.tty {
                Some(t) => t
                    .warnings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("NOTE: {n}")),
                None => {
                    let _ = writeln!(self.out.lock().unwrap_or_else(|p| p.into_inner()), "NOTE: {n}");
                }
            },
            // The export step's summary line counts the blobs; the blobs themselves are
            // not shown, as BuildKit's plain output does not show them.
            BuildEvent::Push { .. } => {}
        }
    }
}

impl Renderer {
    fn step(&self, e: Event) {
        if let Some(t) = &self.tty {
            t.view.lock().unwrap_or_else(|p| p.into_inner()).apply(e);
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = match self.mode {
            Mode::Quiet | Mode::Tty | Mode::Auto => Ok(()),
            Mode::Rawjson => {
                let time = self.start.elapsed().as_secs_f64();
                let v = match &e {
                    Event::Started { vertex, name } => {
                        serde_json::json!({"time": time, "vertex": vertex, "event": "started", "name": name})
                    }
                    Event::Log { vertex, elapsed, line } => {
                        serde_json::json!({"time": time, "vertex": vertex, "event": "log", "elapsed": elapsed.as_secs_f64(), "line": line})
                    }
                    Event::Status { vertex, line } => {
                        serde_json::json!({"time": time, "vertex": vertex, "event": "status", "line": line})
                    }
                    Event::Cached { vertex, name } => {
                        serde_json::json!({"time": time, "vertex": vertex, "event": "cached", "name": name})
                    }
                    Event::Done { vertex, elapsed } => {
                        serde_json::json!({"time": time, "vertex": vertex, "event": "done", "elapsed": elapsed.as_secs_f64()})
                    }
                    Event::Error { vertex, message } => {
                        serde_json::json!({"time": time, "vertex": vertex, "event": "error", "message": message})
                    }
                    Event::Canceled { vertex } => {
                        serde_json::json!({"time": time, "vertex": vertex, "event": "canceled"})
                    }
                };
                writeln!(out, "{v}")
            }
            Mode::Plain => match &e {
                Event::Started { vertex, name } => writeln!(out, "#{vertex} {name}"),
                Event::Log { vertex, elapsed, line } => writeln!(out, "#{vertex} {:.3} {line}", elapsed.as_secs_f64()),
                Event::Status { vertex, line } => writeln!(out, "#{vertex} {line}"),
                Event::Cached { vertex, name } => writeln!(out, "#{vertex} {name}\n#{vertex} CACHED\n"),
                Event::Done { vertex, elapsed } => writeln!(out, "#{vertex} DONE {}\n", Self::secs(*elapsed)),
                Event::Error { vertex, message } => writeln!(out, "#{vertex} ERROR: {message}\n"),
                Event::Canceled { vertex } => writeln!(out, "#{vertex} CANCELED\n"),
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_and_quiet_show_warnings_in_order_with_the_steps() {
        for (mode, want) in [
            (
                Mode::Plain,
                "#1 [1/1] COPY a /\nWARN: --cache-from x: gone\n#1 DONE 0.0s\n\n",
            ),
            (Mode::Quiet, "WARN: --cache-from x: gone\n"),
        ] {
            let buf = Shared::default();
            let mut r = Renderer::new(mode);
            r.out = Mutex::new(Box::new(buf.clone()));
            r.event(BuildEvent::Step(Event::Started {
                vertex: 1,
                name: "[1/1] COPY a /".into(),
            }));
            r.event(BuildEvent::Warning("--cache-from x: gone".into()));
            r.event(BuildEvent::Push {
                reference: kiln_image::Reference::parse("localhost:5000/a").unwrap(),
                line: "0123456789ab: Pushed".into(),
            });
            r.event(BuildEvent::Step(Event::Done {
                vertex: 1,
                elapsed: Duration::ZERO,
            }));
            assert_eq!(
                String::from_utf8(buf.0.lock().unwrap().clone()).unwrap(),
                want,
                "{mode:?}"
            );
        }
    }

    #[test]
    fn the_tty_frame_looks_like_buildkits() {
        let mut v = View {
            start: Instant::now(),
            vertices: Vec::new(),
            drawn: 0,
        };
        v.apply(Event::Started {
            vertex: 1,
            name: "[internal] load build definition from Dockerfile".into(),
        });
        v.apply(Event::Done {
            vertex: 1,
            elapsed: Duration::from_millis(20),
        });
        v.apply(Event::Cached {
            vertex: 2,
            name: "[1/3] RUN echo a".into(),
        });
        v.apply(Event::Started {
            vertex: 3,
            name: "[2/3] RUN make".into(),
        });
        for i in 0..10 {
            v.apply(Event::Log {
                vertex: 3,
                elapsed: Duration::ZERO,
                line: format!("line {i}"),
            });
        }
        let f = v.frame(60, false);
        assert!(f[0].starts_with("[+] Building ") && f[0].ends_with("(2/3)"), "{f:#?}");
        assert!(f[1].starts_with(" => [internal] load build definition") && f[1].ends_with("0.0s"));
        assert_eq!(f[1].chars().count(), 60);
        assert!(f[2].starts_with(" => CACHED [1/3] RUN echo a"));
        assert!(f[3].starts_with(" => [2/3] RUN make"));
        // The last six lines of the running step.
        assert_eq!(&f[4..], [4, 5, 6, 7, 8, 9].map(|i| format!(" => => # line {i}")));
        v.apply(Event::Error {
            vertex: 3,
            message: "boom".into(),
        });
        let f = v.frame(60, true);
        assert!(f[0].contains("(3/3) FINISHED"));
        assert!(f[3].starts_with(" => ERROR [2/3] RUN make"));
        assert_eq!(f.len(), 4, "no log lines for finished steps");
    }
}
