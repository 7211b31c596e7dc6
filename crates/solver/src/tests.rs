use super::*;
use kiln_graph::{FileAction, FileOp, Op, OpMeta, SourceOp};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

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

#[test]
fn a_step_killed_by_the_interrupt_that_cancels_the_build_is_canceled_not_failed() {
    // A terminal's Ctrl-C reaches the step and kiln at once: the step can die of it
    // before anything polls the interrupt and trips the cancellation. The failure must
    // be seen as the cancel it is, not as the step's error.
    let mut def = Definition::new();
    let slow = op(&mut def, vec![], "sleep:5000", 1);
    let killed = op(&mut def, vec![], "fail:0", 2);
    def.root = Some(op(&mut def, vec![slow, killed], "sleep:0", 3));
    let r = Sleepy::new();
    let progress = Collect(Mutex::new(vec![]));
    // The interrupt arrives as the step dies of it: true from the moment it ended.
    let interrupted = || !r.finished.lock().unwrap().is_empty();
    let t0 = Instant::now();
    let err = Solver::new(&progress, 1)
        .jobs(4)
        .interrupted_by(&interrupted)
        .solve(&def, &r)
        .unwrap_err();
    assert!(matches!(err, SolveError::Canceled), "{err}");
    assert!(t0.elapsed() < Duration::from_millis(1000), "took {:?}", t0.elapsed());
    let events = progress.0.lock().unwrap();
    assert_eq!(
        events.iter().filter(|e| matches!(e, Event::Error { .. })).count(),
        0,
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(e, Event::Canceled { .. })), "{events:?}");
}
