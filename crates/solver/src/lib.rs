//! kiln-solver runs a build graph: every reachable op once, inputs first, reporting
//! progress as events. It knows the graph and nothing of containers or files: what an
//! op does is the [`OpRunner`]'s business.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_graph::{Definition, Input, Node};
use kiln_image::Digest;

/// Event is one progress event, numbered per vertex like BuildKit's `#N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        vertex: u32,
        name: String,
    },
    Log {
        vertex: u32,
        elapsed: Duration,
        line: String,
    },
    /// A status line of the vertex itself (no timestamp), e.g. `exporting layers done`.
    Status {
        vertex: u32,
        line: String,
    },
    Cached {
        vertex: u32,
        name: String,
    },
    Done {
        vertex: u32,
        elapsed: Duration,
    },
    Error {
        vertex: u32,
        message: String,
    },
    /// The op was stopped because another one failed (BuildKit's `CANCELED`).
    Canceled {
        vertex: u32,
    },
}

/// Progress receives events; renderers implement it.
pub trait Progress: Sync {
    fn event(&self, e: Event);
}

/// A no-op progress sink.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event) {}
}

/// A way to stop a running op: called (once) when the build is cancelled.
pub type CancelFn = Box<dyn FnOnce() + Send>;

/// Cancel is the build-wide cancellation: the first failure (or the caller) trips it,
/// and every running op's registered stop function is called.
#[derive(Default)]
pub struct Cancel {
    tripped: AtomicBool,
    running: Mutex<HashMap<u32, Vec<CancelFn>>>,
}

impl Cancel {
    /// Whether the build is being cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// Cancels the build: stops every running op that registered a way to stop.
    pub fn cancel(&self) {
        self.tripped.store(true, Ordering::SeqCst);
        let all: Vec<CancelFn> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.drain().flat_map(|(_, v)| v).collect()
        };
        for f in all {
            f();
        }
    }

    fn register(&self, slot: u32, f: CancelFn) {
        if self.is_cancelled() {
            f();
            return;
        }
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(slot)
            .or_default()
            .push(f);
        // cancel() may have drained between the check and the push.
        if self.is_cancelled() {
            let fs = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&slot);
            for f in fs.into_iter().flatten() {
                f();
            }
        }
    }

    fn finished(&self, slot: u32) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&slot);
    }
}

/// VertexLog lets a running op write log lines to its vertex and say how to stop it.
pub struct VertexLog<'a> {
    vertex: u32,
    slot: u32,
    start: Instant,
    progress: &'a dyn Progress,
    cancel: &'a Cancel,
}

impl VertexLog<'_> {
    /// Emits one line of output for this vertex.
    pub fn line(&self, line: impl Into<String>) {
        self.progress.event(Event::Log {
            vertex: self.vertex,
            elapsed: self.start.elapsed(),
            line: line.into(),
        });
    }

    /// Registers how to stop this op if the build is cancelled while it runs (called
    /// at once if it already is).
    pub fn on_cancel(&self, f: CancelFn) {
        self.cancel.register(self.slot, f);
    }

    /// Whether the build is being cancelled (long ops may check and give up).
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

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
        }
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
            Err(_) if self.cancel.is_cancelled() => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_graph::{FileAction, FileOp, Op, OpMeta, SourceOp};
    use std::sync::Mutex;

    struct Counting(Mutex<Vec<String>>);
    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    impl OpRunner for Counting {
        type Output = u32;
        type Error = Boom;
        fn run(&self, _: &Digest, node: &Node, inputs: Vec<u32>, _: &VertexLog<'_>) -> Result<u32, Boom> {
            self.0.lock().unwrap().push(node.meta.description.clone());
            if node.meta.description == "fail" {
                return Err(Boom);
            }
            Ok(inputs.iter().sum::<u32>() + 1)
        }
    }

    struct Collect(Mutex<Vec<Event>>);
    impl Progress for Collect {
        fn event(&self, e: Event) {
            self.0.lock().unwrap().push(e);
        }
    }

    fn mkdir(def: &mut Definition, base: kiln_graph::Input, path: &str, desc: &str) -> kiln_graph::Input {
        def.add(
            Op::File(FileOp {
                base: Some(0),
                actions: vec![FileAction::Mkdir {
                    path: path.into(),
                    mode: 0o755,
                    chown: None,
                }],
            }),
            vec![base],
            OpMeta {
                description: desc.into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn several_roots_share_their_common_ops() {
        // Two platforms' graphs: a shared step and one step each.
        let mut def = Definition::new();
        let s = def.add(
            Op::Source(SourceOp::Scratch),
            vec![],
            OpMeta {
                description: "scratch".into(),
                ..Default::default()
            },
        );
        let shared = mkdir(&mut def, s, "/shared", "shared");
        let amd64 = mkdir(&mut def, shared.clone(), "/amd64", "amd64");
        let arm64 = mkdir(&mut def, shared, "/arm64", "arm64");
        let runner = Counting(Mutex::new(vec![]));
        let out = Solver::new(&NoProgress, 1)
            .jobs(1)
            .solve_all(&def, &[amd64.clone(), arm64.clone()], &runner)
            .unwrap();
        assert_eq!(out, [3, 3]);
        let mut ran = runner.0.lock().unwrap().clone();
        ran.sort();
        assert_eq!(ran, ["amd64", "arm64", "scratch", "shared"]);
        assert!(matches!(
            Solver::new(&NoProgress, 1).solve_all(&def, &[], &runner),
            Err(SolveError::NoRoot)
        ));
    }

    #[test]
    fn runs_each_digest_once_inputs_first() {
        let mut def = Definition::new();
        let s = def.add(
            Op::Source(SourceOp::Scratch),
            vec![],
            OpMeta {
                description: "scratch".into(),
                ..Default::default()
            },
        );
        let a = mkdir(&mut def, s.clone(), "/a", "a");
        let a2 = mkdir(&mut def, s.clone(), "/a", "a again");
        assert_eq!(a, a2);
        let b = def.add(
            Op::File(FileOp {
                base: Some(0),
                actions: vec![],
            }),
            vec![a.clone(), a2],
            OpMeta {
                description: "b".into(),
                ..Default::default()
            },
        );
        def.root = Some(b);
        let runner = Counting(Mutex::new(vec![]));
        let progress = Collect(Mutex::new(vec![]));
        let out = Solver::new(&progress, 1).solve(&def, &runner).unwrap();
        assert_eq!(out, 5);
        assert_eq!(*runner.0.lock().unwrap(), vec!["scratch", "a", "b"]);
        let events = progress.0.lock().unwrap();
        assert_eq!(
            events[0],
            Event::Started {
                vertex: 1,
                name: "scratch".into()
            }
        );
    }

    #[test]
    fn failure_stops_and_names_the_op() {
        let mut def = Definition::new();
        let s = def.add(Op::Source(SourceOp::Scratch), vec![], OpMeta::default());
        let f = mkdir(&mut def, s, "/x", "fail");
        def.root = Some(mkdir(&mut def, f, "/y", "after"));
        let runner = Counting(Mutex::new(vec![]));
        let err = Solver::new(&NoProgress, 1).solve(&def, &runner).unwrap_err();
        assert_eq!(err.to_string(), "fail");
        assert!(!runner.0.lock().unwrap().contains(&"after".to_string()));
    }

    #[test]
    fn a_failing_hidden_op_gets_a_step_of_its_own() {
        let mut def = Definition::new();
        let s = def.add(
            Op::Source(SourceOp::Scratch),
            vec![],
            OpMeta {
                description: "fail".into(),
                hidden: true,
                ..Default::default()
            },
        );
        def.root = Some(mkdir(&mut def, s, "/y", "after"));
        let progress = Collect(Mutex::new(vec![]));
        let runner = Counting(Mutex::new(vec![]));
        assert!(Solver::new(&progress, 1).solve(&def, &runner).is_err());
        let events = progress.0.lock().unwrap();
        assert_eq!(
            events[..],
            [
                Event::Started {
                    vertex: 1,
                    name: "fail".into()
                },
                Event::Error {
                    vertex: 1,
                    message: "boom".into()
                }
            ]
        );
    }

    /// A fake op runner for scheduling tests: each op sleeps for the number of ms in its
    /// description (`sleep:N`), `fail:N` fails after N ms; it records the maximum number
    /// of ops running at once and the order ops finished.
    struct Sleepy {
        running: std::sync::atomic::AtomicUsize,
        max: std::sync::atomic::AtomicUsize,
        finished: Mutex<Vec<Digest>>,
        canceled: std::sync::atomic::AtomicUsize,
    }

    impl Sleepy {
        fn new() -> Self {
            Sleepy {
                running: 0.into(),
                max: 0.into(),
                finished: Mutex::new(Vec::new()),
                canceled: 0.into(),
            }
        }
    }

    impl OpRunner for Sleepy {
        type Output = u32;
        type Error = Boom;
        fn run(&self, d: &Digest, node: &Node, _inputs: Vec<u32>, log: &VertexLog<'_>) -> Result<u32, Boom> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
            let (kind, ms) = node.meta.description.split_once(':').unwrap_or(("sleep", "0"));
            let ms: u64 = ms.parse().unwrap_or(0);
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            log.on_cancel(Box::new(move || s2.store(true, Ordering::SeqCst)));
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(ms) {
                if stop.load(Ordering::SeqCst) {
                    self.canceled.fetch_add(1, Ordering::SeqCst);
                    self.running.fetch_sub(1, Ordering::SeqCst);
                    return Err(Boom);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.finished.lock().unwrap().push(d.clone());
            if kind == "fail" {
                return Err(Boom);
            }
            Ok(1)
        }
    }

    /// A file op named `desc` on top of `inputs` (distinct by `n`).
    fn op(def: &mut Definition, inputs: Vec<kiln_graph::Input>, desc: &str, n: usize) -> kiln_graph::Input {
        def.add(
            Op::File(FileOp {
                base: None,
                actions: vec![FileAction::Mkdir {
                    path: format!("/{n}"),
                    mode: 0o755,
                    chown: None,
                }],
            }),
            inputs,
            OpMeta {
                description: desc.into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn independent_ops_run_together_up_to_the_bound() {
        for jobs in [1, 2, 3] {
            let mut def = Definition::new();
            let leaves: Vec<_> = (0..6).map(|n| op(&mut def, vec![], "sleep:40", n)).collect();
            def.root = Some(op(&mut def, leaves, "sleep:0", 99));
            let r = Sleepy::new();
            let t0 = Instant::now();
            Solver::new(&NoProgress, 1).jobs(jobs).solve(&def, &r).unwrap();
            assert_eq!(r.max.load(Ordering::SeqCst), jobs, "bound {jobs}");
            // Six 40 ms ops in ceil(6/jobs) waves.
            let waves = 6u32.div_ceil(jobs as u32);
            assert!(t0.elapsed() >= Duration::from_millis(40 * waves as u64));
        }
    }

    #[test]
    fn a_failure_cancels_the_running_siblings_quickly() {
        let mut def = Definition::new();
        let slow1 = op(&mut def, vec![], "sleep:5000", 1);
        let slow2 = op(&mut def, vec![], "sleep:5000", 2);
        let bad = op(&mut def, vec![], "fail:30", 3);
        def.root = Some(op(&mut def, vec![slow1, slow2, bad], "sleep:0", 4));
        let r = Sleepy::new();
        let progress = Collect(Mutex::new(vec![]));
        let t0 = Instant::now();
        let err = Solver::new(&progress, 1).jobs(4).solve(&def, &r).unwrap_err();
        assert!(t0.elapsed() < Duration::from_millis(1000), "took {:?}", t0.elapsed());
        assert_eq!(err.to_string(), "fail:30");
        assert_eq!(r.canceled.load(Ordering::SeqCst), 2);
        let events = progress.0.lock().unwrap();
        assert_eq!(events.iter().filter(|e| matches!(e, Event::Canceled { .. })).count(), 2);
        assert_eq!(events.iter().filter(|e| matches!(e, Event::Error { .. })).count(), 1);
    }

    #[test]
    fn random_dags_finish_in_dependency_order_without_deadlock() {
        // xorshift from a fixed seed: a few hundred graphs, the same ones every run.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for g in 0..300 {
            let mut def = Definition::new();
            let n = 2 + (next() % 14) as usize;
            let mut nodes: Vec<kiln_graph::Input> = Vec::new();
            for i in 0..n {
                let mut ins: Vec<kiln_graph::Input> = Vec::new();
                for earlier in &nodes {
                    if next() % 3 == 0 {
                        ins.push(earlier.clone());
                    }
                }
                // Same op twice in a diamond: an input may repeat.
                if let (Some(first), true) = (ins.first().cloned(), next() % 5 == 0) {
                    ins.push(first);
                }
                let d = format!("sleep:{}", next() % 3);
                nodes.push(op(&mut def, ins, &d, i));
            }
            let root = op(&mut def, nodes.clone(), "sleep:0", 1000);
            def.root = Some(root);
            let r = Sleepy::new();
            let jobs = 1 + (g % 4);
            Solver::new(&NoProgress, 1).jobs(jobs).solve(&def, &r).unwrap();
            let order = r.finished.lock().unwrap().clone();
            assert_eq!(order.len(), def.topo_order().len(), "graph {g}: every op once");
            let pos: HashMap<&Digest, usize> = order.iter().enumerate().map(|(i, d)| (d, i)).collect();
            for (d, node) in &def.nodes {
                for i in &node.inputs {
                    assert!(pos[&i.op] < pos[d], "graph {g}: an input finished after its user");
                }
            }
        }
    }
}
