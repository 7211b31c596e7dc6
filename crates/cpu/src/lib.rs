//! One CPU budget for all of kiln's own CPU work: hashing a build context, copying
//! files, writing tar streams, gzip and zstd. The solver runs up to twice as many ops
//! as there are CPUs (most of an op's time is spent waiting: on a RUN step's process,
//! a download), so those ops must not each start a pool the size of the machine; every
//! thread doing CPU work holds a [`Permit`] of one [`Budget`] instead, and at most
//! [`Budget::size`] permits exist.
//!
//! The rules that keep this free of deadlocks:
//! - a thread *starting* CPU work (an op's thread writing a layer, say) takes a permit
//!   with [`Budget::acquire`], which waits; a thread that already holds one of the same
//!   budget gets an empty permit back (nested work never waits for itself);
//! - helpers are only ever added with [`Budget::try_acquire`], which never waits: when
//!   no CPU is free the work runs on the thread that already holds a permit
//!   ([`Budget::workers`] does this for pools);
//! - nobody waits for a permit while holding one.
//!
//! Work sites call [`Budget::working`] (cheap) so tests can check that no CPU work ran
//! without a permit and that no more than `size` ran at once.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// Budget is a number of CPUs handed out as permits.
#[derive(Debug)]
pub struct Budget {
    size: usize,
    used: Mutex<usize>,
    freed: Condvar,
    peak: AtomicUsize,
    unpermitted: AtomicUsize,
}

thread_local! {
    /// The budgets (by address) this thread holds a permit of.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The process's budget: one permit per CPU kiln may run on.
pub fn global() -> &'static Budget {
    static GLOBAL: OnceLock<Budget> = OnceLock::new();
    GLOBAL.get_or_init(|| Budget::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

impl Budget {
    /// A budget of `size` CPUs (at least one).
    pub fn new(size: usize) -> Self {
        Budget {
            size: size.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
            peak: AtomicUsize::new(0),
            unpermitted: AtomicUsize::new(0),
        }
    }

    /// How many permits there are.
    pub fn size(&self) -> usize {
        self.size
    }

    fn id(&self) -> usize {
        self as *const Budget as usize
    }

    /// Whether this thread holds a permit of this budget.
    pub fn held(&self) -> bool {
        HELD.with(|h| h.borrow().contains(&self.id()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn grant(&self, used: &mut usize) {
        *used += 1;
        self.peak.fetch_max(*used, Ordering::Relaxed);
    }

    fn give_back(&self) {
        let mut used = self.lock();
        *used -= 1;
        self.freed.notify_one();
    }

    /// A CPU for this thread, waiting for a free one; an empty hold if the thread
    /// already holds a CPU of this budget (nested work never waits for itself).
    pub fn acquire(&self) -> Held<'_> {
        if self.held() {
            return Held {
                budget: self,
                owns: false,
                _not_send: PhantomData,
            };
        }
        let mut used = self.lock();
        while *used >= self.size {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        self.grant(&mut used);
        drop(used);
        Permit { budget: Some(self) }.adopt()
    }

    /// A CPU if one is free now, for a helper thread: move it there and
    /// [`Permit::adopt`] it.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut used = self.lock();
        (*used < self.size).then(|| {
            self.grant(&mut used);
            Permit { budget: Some(self) }
        })
    }

    /// Notes that this thread is doing CPU work now: counted when it holds no permit
    /// (which [`Budget::unpermitted`] reports; a test looks at it).
    pub fn working(&self) {
        if !self.held() {
            self.unpermitted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Most permits held at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// How often [`Budget::working`] found a thread without a permit.
    pub fn unpermitted(&self) -> usize {
        self.unpermitted.load(Ordering::Relaxed)
    }

    /// Runs `work` on the calling thread (with a permit, waiting for one if needed)
    /// and on up to `max - 1` helper threads, one for each CPU free right now; returns
    /// each run's result, the caller's first. `work` must share what there is to do
    /// (a queue, an atomic index) so that any number of runs, even one, does it all.
    pub fn workers<T: Send>(&self, max: usize, work: impl Fn() -> T + Sync) -> Vec<T> {
        let _mine = self.acquire();
        let helpers: Vec<Permit<'_>> = (1..max).map_while(|_| self.try_acquire()).collect();
        if helpers.is_empty() {
            return vec![work()];
        }
        std::thread::scope(|s| {
            let work = &work;
            let handles: Vec<_> = helpers
                .into_iter()
                .map(|p| {
                    s.spawn(move || {
                        let _p = p.adopt();
                        work()
                    })
                })
                .collect();
            let mut out = vec![work()];
            out.extend(
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
            );
            out
        })
    }
}

/// Permit is one CPU of a [`Budget`] not yet in use by a thread (it can be moved to
/// one): [`Permit::adopt`] it on the thread that works. Given back when dropped.
#[derive(Debug)]
#[must_use = "the CPU is given back when the permit is dropped"]
pub struct Permit<'a> {
    budget: Option<&'a Budget>,
}

impl<'a> Permit<'a> {
    /// The CPU, held by the current thread.
    pub fn adopt(mut self) -> Held<'a> {
        let budget = self.budget.take().expect("a permit is adopted once");
        HELD.with(|h| h.borrow_mut().push(budget.id()));
        Held {
            budget,
            owns: true,
            _not_send: PhantomData,
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.budget {
            b.give_back();
        }
    }
}

/// Held is a CPU of a [`Budget`] held by the current thread (it cannot move to another
/// thread); given back when dropped.
#[derive(Debug)]
#[must_use = "the CPU is given back when the hold is dropped"]
pub struct Held<'a> {
    budget: &'a Budget,
    /// False for a nested hold: the thread's outer hold gives the CPU back.
    owns: bool,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.owns {
            let id = self.budget.id();
            HELD.with(|h| {
                let mut h = h.borrow_mut();
                if let Some(i) = h.iter().rposition(|&x| x == id) {
                    h.remove(i);
                }
            });
            self.budget.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Work that counts how many run at once (what the budget must bound), and checks
    /// it runs with a CPU held.
    fn busy(b: &Budget, now: &AtomicUsize, max: &AtomicUsize) {
        b.working();
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(2));
        now.fetch_sub(1, Ordering::SeqCst);
    }

    #[test]
    fn pools_inside_many_jobs_never_run_more_workers_than_the_budget() {
        let b = Budget::new(2);
        let (now, max) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items = AtomicUsize::new(0);
        // Eight jobs at once (as the solver runs 2 x CPUs ops), each with a pool that
        // would like four workers.
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let next = AtomicUsize::new(0);
                    let done = b.workers(4, || {
                        let mut mine = 0;
                        while next.fetch_add(1, Ordering::SeqCst) < 20 {
                            busy(&b, &now, &max);
                            mine += 1;
                        }
                        mine
                    });
                    items.fetch_add(done.iter().sum::<usize>(), Ordering::SeqCst);
                });
            }
        });
        assert_eq!(items.load(Ordering::SeqCst), 8 * 20, "all the work was done");
        assert!(
            max.load(Ordering::SeqCst) <= 2,
            "{} workers at once",
            max.load(Ordering::SeqCst)
        );
        assert!(b.peak() <= 2);
        assert_eq!(b.unpermitted(), 0);
    }

    #[test]
    fn nested_holds_do_not_wait_and_helpers_only_take_free_cpus() {
        let b = Budget::new(2);
        let outer = b.acquire();
        let inner = b.acquire(); // would wait forever if it took a second CPU
        let helper = b.try_acquire().expect("one CPU is free");
        assert!(b.try_acquire().is_none(), "both CPUs are in use");
        drop(inner);
        assert!(b.held(), "the outer hold still holds");
        std::thread::scope(|s| {
            s.spawn(|| {
                let h = helper.adopt();
                assert!(b.held());
                b.working();
                drop(h);
                assert!(!b.held());
            });
        });
        drop(outer);
        assert!(!b.held());
        assert_eq!(b.unpermitted(), 0);
        b.working();
        assert_eq!(b.unpermitted(), 1, "work without a CPU is seen");
        // Everything was given back.
        let all: Vec<_> = (0..2).map_while(|_| b.try_acquire()).collect();
        assert_eq!(all.len(), 2);
    }
}
