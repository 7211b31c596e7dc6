//! kiln-solver runs a build graph: every reachable op once, inputs first, reporting
//! progress as events. It knows the graph and nothing of containers or files: what an
//! op does is the [`OpRunner`]'s business.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use kiln_graph::{Definition, Input, Node};
use kiln_image::Digest;

mod cancel;
mod progress;
#[cfg(test)]
mod tests;

pub use cancel::{Cancel, CancelFn, VertexLog};
pub use progress::{Event, NoProgress, Progress};

/// OpRunner executes one op given its inputs' outputs.
pub trait OpRunner {
    type Output: Clone;
    type Error: std::error::Error;
    fn run(
        &self,
        digest: &Digest,
        node: &Node,
        inputs: Vec<Self::Output>,
        log: &VertexLog<'_>,
    ) -> Result<Self::Output, Self::Error>;

    /// A digest of what the op's result depends on beyond its definition and its inputs'
    /// cache keys: for a COPY from the build context, the selected files' contents.
    fn content_key(&self, _node: &Node, _inputs: &[Self::Output]) -> Result<Option<Digest>, Self::Error> {
        Ok(None)
    }

    /// A cached result for `key`, if the op is cacheable and one is held.
    fn load(&self, _key: &Digest, _node: &Node) -> Option<Self::Output> {
        None
    }

    /// Remembers `out` as the result for `key` (when the op is cacheable).
    fn save(&self, _key: &Digest, _node: &Node, _out: &Self::Output) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The cache key of an op: its definition's digest, its inputs' keys (which carry
/// everything below them) and the runner's content key.
pub fn cache_key(node_digest: &Digest, input_keys: &[Digest], content: Option<&Digest>) -> Digest {
    let mut s = format!("kiln-cache-v1\n{node_digest}\n");
    for k in input_keys {
        s.push_str(&format!("in {k}\n"));
    }
    if let Some(c) = content {
        s.push_str(&format!("content {c}\n"));
    }
    Digest::of(s.as_bytes())
}

/// error_chain is the message of `e` followed by each of its causes that the message
/// does not already contain, joined with `: ` (so an IO error shows its errno, e.g.
/// ``cannot write `/x`: No space left on device (os error 28)``).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

/// SolveError is an op failure with the op that failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError<E: std::error::Error + 'static> {
    #[error("{description}")]
    Op {
        description: String,
        node: Box<Node>,
        #[source]
        source: E,
    },
    #[error(transparent)]
    Graph(#[from] kiln_graph::GraphError),
    #[error("definition has no root")]
    NoRoot,
    #[error("the build was canceled")]
    Canceled,
}

/// Solver runs definitions.
pub struct Solver<'a> {
    progress: &'a dyn Progress,
    next_vertex: AtomicU32,
    no_cache: bool,
    no_cache_stages: Vec<String>,
    jobs: usize,
    cancel: Cancel,
    interrupted: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl<'a> Solver<'a> {
    /// A solver reporting to `progress`; vertex numbers start at `first_vertex`.
    pub fn new(progress: &'a dyn Progress, first_vertex: u32) -> Self {
        Solver {
            progress,
            next_vertex: AtomicU32::new(first_vertex),
            no_cache: false,
            no_cache_stages: Vec::new(),
            jobs: default_jobs(),
            cancel: Cancel::default(),
            interrupted: None,
        }
    }

    /// Asks `interrupted` whether the caller cancels the build (a Ctrl-C) when an op
    /// fails: a step that dies of the same signal before anything polled it and tripped
    /// the cancellation is canceled, not the build's error.
    pub fn interrupted_by(mut self, interrupted: &'a (dyn Fn() -> bool + Sync)) -> Self {
        self.interrupted = Some(interrupted);
        self
    }

    /// Whether the build is being canceled, or the caller is canceling it: then the
    /// cancellation is tripped now.
    fn canceling(&self) -> bool {
        if self.cancel.is_cancelled() {
            return true;
        }
        if self.interrupted.is_some_and(|f| f()) {
            self.cancel.cancel();
            return true;
        }
        false
    }

    /// Runs at most `n` ops at once (at least 1).
    pub fn jobs(mut self, n: usize) -> Self {
        self.jobs = n.max(1);
        self
    }

    /// The build's cancellation (e.g. for a Ctrl-C handler).
    pub fn cancel_handle(&self) -> &Cancel {
        &self.cancel
    }

    /// Runs the ops of these stages (lower-case names) even when cached
    /// (`--no-cache-filter`).
    pub fn no_cache_stages(mut self, stages: Vec<String>) -> Self {
        self.no_cache_stages = stages;
        self
    }

    /// Runs every op even when the cache holds its result (`--no-cache`); results are
    /// still recorded.
    pub fn no_cache(mut self, yes: bool) -> Self {
        self.no_cache = yes;
        self
    }

    /// The next vertex number, for events the caller emits itself (e.g. exporting).
    pub fn allocate_vertex(&self) -> u32 {
        self.next_vertex.fetch_add(1, Ordering::SeqCst)
    }

    /// Runs every op reachable from the root, each digest once, an op as soon as its
    /// inputs are done, up to `jobs` at a time, and returns the root's output. The first
    /// failure cancels the ops still running and is the error returned.
    pub fn solve<R>(&self, def: &Definition, runner: &R) -> Result<R::Output, SolveError<R::Error>>
    where
        R: OpRunner + Sync,
        R::Output: Send + Sync,
        R::Error: Send,
    {
        let root = def.root.clone().ok_or(SolveError::NoRoot)?;
        let mut out = self.solve_all(def, &[root], runner)?;
        Ok(out.remove(0))
    }

    /// [`Self::solve`] for several roots at once (one per target platform): every op
    /// reachable from any of them runs once, and the roots' outputs come back in order.
    pub fn solve_all<R>(
        &self,
        def: &Definition,
        roots: &[Input],
        runner: &R,
    ) -> Result<Vec<R::Output>, SolveError<R::Error>>
    where
        R: OpRunner + Sync,
        R::Output: Send + Sync,
        R::Error: Send,
    {
        def.validate()?;
        if roots.is_empty() {
            return Err(SolveError::NoRoot);
        }
        for r in roots {
            if def.node(&r.op).is_none() {
                return Err(kiln_graph::GraphError::MissingRoot(r.op.clone()).into());
            }
        }
        let order = def.topo_order_from(roots);
        let index: HashMap<Digest, usize> = order.iter().cloned().enumerate().map(|(i, d)| (d, i)).collect();
        let mut waiting = vec![0usize; order.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
        for (i, d) in order.iter().enumerate() {
            let node = def.node(d).expect("validated");
            let mut ins: Vec<usize> = node.inputs.iter().map(|x| index[&x.op]).collect();
            ins.sort_unstable();
            ins.dedup();
            waiting[i] = ins.len();
            for j in ins {
                dependents[j].push(i);
            }
        }
        let ready: BTreeSet<usize> = (0..order.len()).filter(|&i| waiting[i] == 0).collect();
        let state = Mutex::new(State::<R::Output, R::Error> {
            ready,
            waiting,
            results: vec![None; order.len()],
            keys: vec![None; order.len()],
            running: 0,
            done: 0,
            failed: None,
        });
        let wake = Condvar::new();
        let jobs = self.jobs.min(order.len().max(1));
        let next_slot = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| loop {
                    let (i, inputs, input_keys) = {
                        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if st.failed.is_some() || st.done == order.len() {
                                return;
                            }
                            if let Some(i) = st.ready.pop_first() {
                                st.running += 1;
                                let node = def.node(&order[i]).expect("validated");
                                let inputs: Vec<R::Output> = node
                                    .inputs
                                    .iter()
                                    .map(|x| st.results[index[&x.op]].clone().expect("input done"))
                                    .collect();
                                let keys: Vec<Digest> = node
                                    .inputs
                                    .iter()
                                    .map(|x| st.keys[index[&x.op]].clone().expect("input done"))
                                    .collect();
                                break (i, inputs, keys);
                            }
                            st = wake.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    let slot = next_slot.fetch_add(1, Ordering::SeqCst);
                    let outcome = self.one(def, &order[i], inputs, &input_keys, runner, slot);
                    self.cancel.finished(slot);
                    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                    st.running -= 1;
                    match outcome {
                        Ok((key, out)) => {
                            st.results[i] = Some(out);
                            st.keys[i] = Some(key);
                            st.done += 1;
                            for &j in &dependents[i] {
                                st.waiting[j] -= 1;
                                if st.waiting[j] == 0 {
                                    st.ready.insert(j);
                                }
                            }
                        }
                        Err(e) => {
                            if st.failed.is_none() && !matches!(e, Failure::Canceled) {
                                if let Failure::Error(e) = e {
                                    st.failed = Some(e);
                                }
                                drop(st);
                                self.cancel.cancel();
                                wake.notify_all();
                                continue;
                            }
                            if st.failed.is_none() {
                                // Canceled from outside (Ctrl-C) with no op failing.
                                st.failed = Some(SolveError::Canceled);
                            }
                        }
                    }
                    drop(st);
                    wake.notify_all();
                });
            }
        });
        let mut st = state.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = st.failed.take() {
            return Err(e);
        }
        Ok(roots
            .iter()
            .map(|r| st.results[index[&r.op]].clone().expect("root solved"))
            .collect())
    }

    /// Keys, looks up and (on a miss) runs one op, reporting progress.
    fn one<R: OpRunner>(
        &self,
        def: &Definition,
        digest: &Digest,
        inputs: Vec<R::Output>,
        input_keys: &[Digest],
        runner: &R,
        slot: u32,
    ) -> Result<(Digest, R::Output), Failure<R::Error>> {
        let node = def.node(digest).expect("validated");
        if self.cancel.is_cancelled() {
            return Err(Failure::Canceled);
        }
        let vertex = if node.meta.hidden { 0 } else { self.allocate_vertex() };
        let fail = |e: R::Error| {
            // A hidden op (a download behind an ADD, say) is shown when it fails, so
            // that its error belongs to a step of its own rather than to vertex 0.
            let vertex = if node.meta.hidden {
                let v = self.allocate_vertex();
                self.progress.event(Event::Started {
                    vertex: v,
                    name: node.meta.description.clone(),
                });
                v
            } else {
                vertex
            };
            self.progress.event(Event::Error {
                vertex,
                message: error_chain(&e),
            });
            Failure::Error(SolveError::Op {
                description: node.meta.description.clone(),
                node: Box::new(node.clone()),
                source: e,
            })
        };
        let content = runner.content_key(node, &inputs).map_err(fail)?;
        let key = cache_key(digest, input_keys, content.as_ref());
        let filtered = node
            .meta
            .stage
            .as_ref()
            .is_some_and(|s| self.no_cache_stages.contains(s));
        if !self.no_cache && !filtered {
            if let Some(out) = runner.load(&key, node) {
                if !node.meta.hidden {
                    self.progress.event(Event::Cached {
                        vertex,
                        name: node.meta.description.clone(),
                    });
                }
                return Ok((key, out));
            }
        }
        let start = Instant::now();
        if !node.meta.hidden {
            self.progress.event(Event::Started {
                vertex,
                name: node.meta.description.clone(),
            });
        }
        let log = VertexLog {
            vertex,
            slot,
            start,
            progress: self.progress,
            cancel: &self.cancel,
        };
        match runner.run(digest, node, inputs, &log) {
            Ok(out) => {
                runner.save(&key, node, &out).map_err(fail)?;
                if !node.meta.hidden {
                    self.progress.event(Event::Done {
                        vertex,
                        elapsed: start.elapsed(),
                    });
                }
                Ok((key, out))
            }
            // An op stopped by the cancellation is not the build's error.
            Err(_) if self.canceling() => {
                if !node.meta.hidden {
                    self.progress.event(Event::Canceled { vertex });
                }
                Err(Failure::Canceled)
            }
            Err(e) => Err(fail(e)),
        }
    }
}

/// The scheduler's shared state.
struct State<O, E: std::error::Error + 'static> {
    /// Ops whose inputs are done, by topological index (lowest first).
    ready: BTreeSet<usize>,
    waiting: Vec<usize>,
    results: Vec<Option<O>>,
    keys: Vec<Option<Digest>>,
    running: usize,
    done: usize,
    failed: Option<SolveError<E>>,
}

enum Failure<E: std::error::Error + 'static> {
    Error(SolveError<E>),
    Canceled,
}

/// Enough ops at once to keep the cores busy and overlap steps that mostly wait.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}
