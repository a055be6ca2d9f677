//! Adaptive pacing over real sockets: against a simulator that throttles every call above a
//! rate limit, the archiver keeps close to the limit without a storm of throttled calls; with
//! a share of calls also refused at random, it keeps the pace and the run stays exact.

mod util;

use std::time::Instant;

use archiver_simulator::Faults;
use util::{sim_config, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_portals_pace_themselves_to_the_rate_limit() {
    const LIMIT: f64 = 20.0;
    // 4 portals x 40 pages: about 8 s of calls at the limit.
    let env = Env::new(sim_config(4, 4000, 0)).await;
    env.sim.set_faults(Faults {
        rate_limit_per_sec: Some(LIMIT),
        retry_after_secs: 1,
        ..Faults::default()
    });
    let t = Instant::now();
    env.run(&["run", "--concurrency", "4"]).await.ok();
    let wall = t.elapsed().as_secs_f64();
    env.sim.set_faults(Faults::default());
    env.assert_exact();
    let s = env.sim.stats();
    let calls = s.list_portals_calls + s.list_sessions_calls + s.get_session_calls;
    let answered = calls - s.throttled - s.server_errors;
    let rate = answered as f64 / wall;
    let share = s.throttled as f64 / calls as f64;
    eprintln!(
        "{answered} calls answered in {wall:.1}s: {rate:.1} calls/s against a limit of {LIMIT}; \
         {} throttled ({:.1}%)",
        s.throttled,
        100.0 * share
    );
    // The bucket lets a first burst of LIMIT calls through, hence the upper bound's slack.
    assert!(
        rate >= 0.8 * LIMIT && rate <= 1.1 * LIMIT + LIMIT / wall,
        "{rate:.1} calls/s against a limit of {LIMIT}"
    );
    // Unpaced, each of the 4 portals runs into the limit once a second: about 4 throttled
    // calls in 24. Paced, at most 10% (the first burst, before pacing starts, takes a few of
    // this short run's 170 calls).
    assert!(share < 0.1, "{} of {calls} calls throttled", s.throttled);
}

/// A busy service: a rate limit, and 5% of the calls it lets through refused at random (the
/// same 429 with `Retry-After`). The run with client IPs is exact (every session the
/// simulator served, terminated, archived once, with the addresses GetSession returns), and
/// the random refusals do not drag the pace far below the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_throttling_under_a_rate_limit_keeps_the_pace_and_the_run_exact() {
    const LIMIT: f64 = 20.0;
    const RANDOM: f64 = 0.05;
    // 2 portals x 150 sessions, a GetSession each: about 15 s of calls at the limit.
    let env = Env::new(sim_config(2, 150, 0)).await;
    env.sim.set_faults(Faults {
        rate_limit_per_sec: Some(LIMIT),
        throttle_rate: RANDOM,
        retry_after_secs: 1,
        ..Faults::default()
    });
    let t = Instant::now();
    env.run(&["run", "--with-client-ips"]).await.ok();
    let wall = t.elapsed().as_secs_f64();
    env.sim.set_faults(Faults::default());
    let s = env.sim.stats();
    env.assert_exact();
    // Every session the simulator sent in a listing is archived (all are terminated here).
    let served: std::collections::BTreeSet<String> =
        env.sim.served().into_iter().map(|s| s.session_id).collect();
    let rows = env.archived();
    let archived: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r.session_id.clone()).collect();
    assert_eq!(served, archived);
    assert_eq!(rows.len(), 300);
    let record: std::collections::BTreeMap<String, Vec<String>> = env
        .sim
        .record()
        .into_iter()
        .map(|s| (s.session_id, s.client_ip_addresses))
        .collect();
    for r in &rows {
        assert_eq!(r.client_ips.as_ref(), Some(&record[&r.session_id]));
    }
    let calls = s.list_portals_calls + s.list_sessions_calls + s.get_session_calls;
    let answered = calls - s.throttled - s.server_errors;
    let rate = answered as f64 / wall;
    eprintln!(
        "{answered} calls answered in {wall:.1}s: {rate:.1} calls/s against a limit of {LIMIT} \
         with {:.0}% refused at random; {} throttled ({:.1}%)",
        100.0 * RANDOM,
        s.throttled,
        100.0 * s.throttled as f64 / calls as f64
    );
    // At most 0.95 x LIMIT can be answered (a refused call spends a token too), plus the
    // bucket's first burst.
    assert!(
        rate >= 0.7 * LIMIT,
        "{rate:.1} calls/s against a limit of {LIMIT} with {RANDOM} refused at random"
    );
}
