//! kiln-solver runs a build graph: every reachable op once, inputs first, reporting
//! progress as events. It knows the graph and nothing of containers or files: what an
//! op does is the [`OpRunner`]'s business.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kiln_graph::{Definition, Node};
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

/// VertexLog lets a running op write log lines to its vertex.
pub struct VertexLog<'a> {
    vertex: u32,
    start: Instant,
    progress: &'a dyn Progress,
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
}

/// Solver runs definitions.
pub struct Solver<'a> {
    progress: &'a dyn Progress,
    next_vertex: std::cell::Cell<u32>,
    no_cache: bool,
    no_cache_stages: Vec<String>,
}

impl<'a> Solver<'a> {
    /// A solver reporting to `progress`; vertex numbers start at `first_vertex`.
    pub fn new(progress: &'a dyn Progress, first_vertex: u32) -> Self {
        Solver {
            progress,
            next_vertex: std::cell::Cell::new(first_vertex),
            no_cache: false,
            no_cache_stages: Vec::new(),
        }
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
        let v = self.next_vertex.get();
        self.next_vertex.set(v + 1);
        v
    }

    /// Runs every op reachable from the root, inputs first, each digest once, and
    /// returns the root's output.
    pub fn solve<R: OpRunner>(&self, def: &Definition, runner: &R) -> Result<R::Output, SolveError<R::Error>> {
        def.validate()?;
        let root = def.root.clone().ok_or(SolveError::NoRoot)?;
        let mut results: HashMap<Digest, R::Output> = HashMap::new();
        let mut keys: HashMap<Digest, Digest> = HashMap::new();
        for digest in def.topo_order() {
            let node = def.node(&digest).expect("validated");
            let inputs: Vec<R::Output> = node.inputs.iter().map(|i| results[&i.op].clone()).collect();
            let vertex = if node.meta.hidden { 0 } else { self.allocate_vertex() };
            let fail = |vertex: u32, e: R::Error| {
                self.progress.event(Event::Error {
                    vertex,
                    message: e.to_string(),
                });
                SolveError::Op {
                    description: node.meta.description.clone(),
                    node: Box::new(node.clone()),
                    source: e,
                }
            };
            let input_keys: Vec<Digest> = node.inputs.iter().map(|i| keys[&i.op].clone()).collect();
            let content = runner.content_key(node, &inputs).map_err(|e| fail(vertex, e))?;
            let key = cache_key(&digest, &input_keys, content.as_ref());
            keys.insert(digest.clone(), key.clone());
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
                    results.insert(digest, out);
                    continue;
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
                start,
                progress: self.progress,
            };
            match runner.run(&digest, node, inputs, &log) {
                Ok(out) => {
                    runner.save(&key, node, &out).map_err(|e| fail(vertex, e))?;
                    if !node.meta.hidden {
                        self.progress.event(Event::Done {
                            vertex,
                            elapsed: start.elapsed(),
                        });
                    }
                    results.insert(digest, out);
                }
                Err(e) => return Err(fail(vertex, e)),
            }
        }
        Ok(results.remove(&root.op).expect("root solved"))
    }
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
}
