//! Adaptive pacing over real sockets: against a simulator that throttles every call above a
//! rate limit, the archiver keeps close to the limit without a storm of throttled calls.

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
    // calls in 24.
    assert!(share < 0.05, "{} of {calls} calls throttled", s.throttled);
}
