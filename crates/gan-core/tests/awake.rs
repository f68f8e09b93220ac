//! `with_workers_awake`: the pool's other workers stay awake while the work runs, and
//! stop when it ends, however it ends.

use gan_core::fast::with_workers_awake;
use rayon::prelude::*;

fn pool(threads: usize, name: &'static str) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{name}{i}"))
        .build()
        .unwrap()
}

/// The scheduler states (`R` running, `S` sleeping, ...) of this process's threads
/// whose names start with `name`, from /proc.
#[cfg(target_os = "linux")]
fn states(name: &str) -> Vec<char> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with(name) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // "pid (comm) S ...": the state follows the name's closing parenthesis.
        let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
        out.push(state);
    }
    out
}

/// A serial stretch much longer than rayon's rounds of looking for work before it
/// sleeps: a plain worker falls asleep during it, an awake one runs throughout. The
/// states are sampled all through the stretch, not once at its end: on a busy 2-vCPU VM
/// (the other tests' pools spinning) the other worker could still be waiting for a CPU to
/// finish its rounds after 60 ms, and a single look at the end read ['R', 'R'].
#[cfg(target_os = "linux")]
#[test]
fn the_other_workers_run_through_a_serial_stretch_and_sleep_after() {
    // Samples the workers' states for `ms`, or until `stop` holds for a sample.
    let watch = |ms: u64, stop: fn(&[char]) -> bool| {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        let mut seen = Vec::new();
        while std::time::Instant::now() < until {
            let now = states("spinw");
            let done = stop(&now);
            seen.push(now);
            if done {
                break;
            }
        }
        seen
    };
    let pool = pool(2, "spinw");
    // A new thread takes its name itself, once it runs.
    let named = watch(5_000, |s| s.len() == 2);
    assert_eq!(named.last().map(Vec::len), Some(2), "the two workers named");
    // The first worker runs the work; its state is R whichever way the other is.
    let awake = pool.install(|| with_workers_awake(|| watch(200, |_| false)));
    assert!(
        awake.iter().all(|s| s == &['R', 'R']),
        "both workers running all through the work: {:?}",
        awake.iter().find(|s| s != &&['R', 'R'])
    );
    let asleep = |s: &[char]| s.contains(&'S');
    let plain = pool.install(|| watch(5_000, asleep));
    assert!(
        plain.last().is_some_and(|s| asleep(s)),
        "without it the other worker falls asleep: {:?}",
        plain.last()
    );
    let after = watch(5_000, |s| s == ['S', 'S']);
    assert_eq!(
        after.last().map(|s| s.as_slice()),
        Some(&['S', 'S'][..]),
        "both asleep once the work is done"
    );
}

#[test]
fn the_work_runs_on_a_worker_with_the_pool_helping() {
    let pool = pool(2, "help");
    let (on_worker, sum) = pool.install(|| {
        with_workers_awake(|| {
            let sum: u64 = (0..100_000u64).into_par_iter().map(|i| i * i).sum();
            (rayon::current_thread_index().is_some(), sum)
        })
    });
    assert!(on_worker);
    assert_eq!(sum, (0..100_000u64).map(|i| i * i).sum::<u64>());
    // The caller's frozen flag goes with the work (a layer's forward pass then records
    // no weight gradient).
    use gan_core::fast::layers::{frozen, linear};
    let vars = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(
        &vars,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    let fc = linear(3, 2, vb.pp("fc")).unwrap();
    let x = candle_core::Tensor::ones((4, 3), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    let tracked =
        || with_workers_awake(|| candle_core::Module::forward(&fc, &x).unwrap().track_op());
    assert!(tracked());
    assert!(!frozen(tracked), "frozen on the worker as on the caller");
    // From a thread outside the pool: handed to the pool.
    let here = with_workers_awake(rayon::current_thread_index);
    assert!(here.is_some(), "run on the global pool's worker");
}

/// A panic in the work reaches the caller instead of leaving the pool spinning (the
/// scope would wait for the spinners for ever).
#[test]
fn a_panic_stops_the_spinning_and_reaches_the_caller() {
    let pool = pool(2, "panic");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.install(|| with_workers_awake(|| panic!("inside the work")))
    }));
    assert!(caught.is_err());
    assert_eq!(
        pool.install(|| with_workers_awake(|| 7)),
        7,
        "the pool still works"
    );
}

/// Several callers at once (trainers of a sweep, tests of one binary) on a pool of two:
/// each caller's spinners may run another caller's work, and every one finishes.
#[test]
fn concurrent_callers_all_finish() {
    let pool = pool(2, "many");
    let pool = &pool;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6u64)
            .map(|t| {
                s.spawn(move || {
                    pool.install(|| {
                        (0..20)
                            .map(|_| {
                                with_workers_awake(|| {
                                    (0..20_000u64).into_par_iter().map(|i| i ^ t).sum::<u64>()
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            let want = (0..20_000u64).map(|i| i ^ t as u64).sum::<u64>();
            assert_eq!(h.join().unwrap(), vec![want; 20]);
        }
    });
}
